"""Compiles the CUDA ops and hipifies their sources; exits non-zero on any failure.

Run by .ci/cuda_compile_check.sh inside the venv that holds the CUDA build of torch. Builds through the
accelops op builders (stable-ABI libraries; loading one registers its operators, which needs no GPU).
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
       "fused_layer_norm": "FusedLayerNormBuilder", "fused_moe_dispatch": "FusedMoEDispatchBuilder"}
# CUDA runtime names, headers and vendor types that hipify must have replaced in every output file.
LEFTOVER = re.compile(r"\bcuda[A-Z]\w*|\bcuda_runtime\w*\.h|\bcuda_(?:fp16|bf16)\.h|\b__nv_\w+|[<\"](?:c10|ATen)/cuda/")


def build_with_engine(class_name):
    """Build (and load, which needs no GPU) through the accelops builder."""
    from accelops.accelerator import get_accelerator

    get_accelerator().create_op_builder(class_name).load(verbose=False)


def compile_ops(work):
    """Compile every op; returns the failures."""
    failures = []
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(work) / "torch_extensions"))
    for name, class_name in OPS.items():
        t0 = time.time()
        try:
            build_with_engine(class_name)
        except Exception as exc:  # report every op, then fail
            failures.append(f"{name}: build failed: {exc}")
            print(f"FAIL build {name}: {exc}", flush=True)
            continue
        print(f"ok   build {name} for TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')} via op builder "
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
        # "already hipified": a header hipified earlier in this run, through an include of another header
        # (torch's walk then meets it again and finds its output written); its output is checked below.
        if not any(word in status for word in ("ok", "no changes", "already hipified")):
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
