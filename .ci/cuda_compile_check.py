"""Compiles the CUDA ops and hipifies their sources; exits non-zero on any failure.

Run by .ci/cuda_compile_check.sh inside the venv that holds the CUDA build of torch. Builds through the
accelops op builders when the build engine is present, else directly with torch.utils.cpp_extension.
"""
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
OPS = {"fused_adam": "FusedAdamBuilder", "fused_lion": "FusedLionBuilder",
       "fused_layer_norm": "FusedLayerNormBuilder"}
DIRECT_SOURCES = {"fused_adam": "cuda/adam", "fused_lion": "cuda/lion", "fused_layer_norm": "cuda/layer_norm"}
# CUDA runtime names, headers and vendor types that hipify must have replaced in every output file.
LEFTOVER = re.compile(r"\bcuda[A-Z]\w*|\bcuda_runtime\w*\.h|\bcuda_(?:fp16|bf16)\.h|\b__nv_\w+|[<\"](?:c10|ATen)/cuda/")


def build_with_engine(name, class_name):
    """Build (and import, which needs no GPU) through the accelops builder."""
    from accelops.accelerator import get_accelerator

    get_accelerator().create_op_builder(class_name).load(verbose=False)


def build_direct(name, build_root):
    """Build with torch.utils.cpp_extension from the op's csrc folder (engine not present)."""
    from torch.utils.cpp_extension import load

    folder = CSRC / DIRECT_SOURCES[name]
    sources = sorted(str(p) for p in folder.iterdir() if p.suffix in (".cpp", ".cu"))
    build_dir = Path(build_root) / name
    build_dir.mkdir(parents=True)
    load(name=f"accelops_check_{name}", sources=sources, extra_include_paths=[str(CSRC / "includes")],
         extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-lineinfo"], build_directory=str(build_dir),
         verbose=False)


def engine_present():
    try:
        from accelops.op_builder import CUDAOpBuilder  # noqa: F401
    except ImportError:
        return False
    return True


def compile_ops(work):
    """Compile every op; returns the failures."""
    failures = []
    use_engine = engine_present()
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(work) / "torch_extensions"))
    for name, class_name in OPS.items():
        t0 = time.time()
        try:
            if use_engine:
                build_with_engine(name, class_name)
            else:
                build_direct(name, work)
        except Exception as exc:  # report every op, then fail
            failures.append(f"{name}: build failed: {exc}")
            print(f"FAIL build {name}: {exc}", flush=True)
            continue
        how = "op builder" if use_engine else "torch.utils.cpp_extension"
        print(f"ok   build {name} for TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')} via {how} "
              f"({time.time() - t0:.0f} s)", flush=True)
    return failures


def strip_comments(text):
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)


def hipify_sources(work):
    """Hipify a copy of csrc/ the way torch does for extensions; returns the problems found."""
    from torch.utils.hipify import hipify_python

    src = Path(work) / "hip_src"
    out = Path(work) / "hip_out"
    shutil.copytree(CSRC, src)
    result = hipify_python.hipify(project_directory=str(src), output_directory=str(out), includes=["*"],
                                  header_include_dirs=[str(src / "includes")], is_pytorch_extension=True,
                                  show_detailed=False, show_progress=False)
    problems = []
    for original, res in result.items():
        if not str(original).startswith(str(out)):
            continue
        status = str(res.status)
        if "ok" not in status and "no changes" not in status:
            problems.append(f"{original}: hipify status {status}")
            continue
        text = strip_comments(Path(res.hipified_path).read_text())
        for match in sorted(set(LEFTOVER.findall(text))):
            problems.append(f"{res.hipified_path}: CUDA identifier left after hipify: {match}")
    print(f"{'ok  ' if not problems else 'FAIL'} hipify {len(result)} files", flush=True)
    return problems


def main():
    with tempfile.TemporaryDirectory(prefix="accelops-cuda-check-") as work:
        failures = compile_ops(work) + hipify_sources(work)
    for line in failures:
        print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
