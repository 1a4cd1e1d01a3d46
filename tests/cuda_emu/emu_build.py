"""Builds the accelops CUDA kernel sources for the host emulation in include/ and loads them.

The .cu files and the device headers (.cuh) are copied with each ``kernel<<<config>>>(`` launch
rewritten to ``::cuda_emu::Launch(config)(kernel, `` and compiled with g++ together with emu_api.cpp into one
shared library, loaded with ctypes. Nothing here needs CUDA, a GPU or a CUDA build of torch.
"""
import ctypes
import hashlib
import re
import subprocess
from pathlib import Path

from torch.utils.cpp_extension import include_paths

HERE = Path(__file__).resolve().parent
CSRC = HERE.parent.parent / "csrc"
KERNEL_SOURCES = [CSRC / "cuda" / "layer_norm" / "layer_norm_kernel.cu",
                  CSRC / "cuda" / "adam" / "fused_adam_kernel.cu",
                  CSRC / "cuda" / "lion" / "fused_lion_kernel.cu",
                  CSRC / "cuda" / "moe_dispatch" / "moe_dispatch_kernel.cu"]
LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^;()]*?>)?)\s*<<<(.*?)>>>\s*\(", re.S)


# A __shared__ array declaration: its name is group 2.
SHARED = re.compile(r"(__shared__\s[^;{}]*?\b([A-Za-z_]\w*)\s*(?:\[[^\];]*\]\s*)+;)")


def translate(source):
    """The .cu text with every triple-chevron launch turned into a cuda_emu::Launch call and every
    __shared__ array poisoned once per block (cuda_emu::poison_shared)."""
    out = LAUNCH.sub(lambda m: f"::cuda_emu::Launch({m.group(2)})({m.group(1)}, ", source)
    if "<<<" in out:
        raise RuntimeError("cuda_emu: a kernel launch was not rewritten")
    out, count = SHARED.subn(lambda m: f"{m.group(1)} ::cuda_emu::poison_shared({m.group(2)}, sizeof({m.group(2)}));",
                             out)
    if count != out.count("__shared__"):
        raise RuntimeError("cuda_emu: a __shared__ declaration was not recognised")
    return out


def build(work_dir, rocm=False):
    """Compile (once per source content and flavour) into ``work_dir`` and return the loaded ctypes
    library. ``rocm``: build the kernels' ROCm branches (``-DUSE_ROCM``: 64-lane wavefronts, HIP's
    launch-table limits) instead of the CUDA ones."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    units = [HERE / "emu_api.cpp"]
    for src in KERNEL_SOURCES:
        unit = work_dir / (src.stem + ".cpp")
        unit.write_text(f'#line 1 "{src}"\n' + translate(src.read_text()))
        units.append(unit)
    # Device headers (.cuh) may launch kernels too: translated copies, found before csrc/includes.
    device_headers = work_dir / "includes"
    device_headers.mkdir(exist_ok=True)
    for header in sorted((CSRC / "includes").glob("*.cuh")):
        (device_headers / header.name).write_text(f'#line 1 "{header}"\n' + translate(header.read_text()))
    inputs = [u.read_bytes() for u in units] + [p.read_bytes() for p in sorted((HERE / "include").iterdir())]
    inputs += [p.read_bytes() for p in sorted((CSRC / "includes").glob("cuda_*"))]
    digest = hashlib.sha256(b"\0".join(inputs)).hexdigest()[:16]
    lib = work_dir / f"libaccelops_{'rocm' if rocm else 'cuda'}_emu_{digest}.so"
    if not lib.exists():
        includes = [f"-I{HERE / 'include'}", f"-I{device_headers}", f"-I{CSRC / 'includes'}"]
        includes += [f"-I{p}" for p in include_paths()]
        # -fsanitize=alignment: a vector access through a misaligned pointer aborts with a message.
        cmd = ["g++", "-std=c++17", "-O2", "-g", "-U_FORTIFY_SOURCE", "-fsanitize=alignment",
               "-fno-sanitize-recover=alignment", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas",
               *(["-DUSE_ROCM"] if rocm else []), *includes, *map(str, units), "-o", str(lib) + ".tmp"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cuda_emu build failed:\n{' '.join(cmd)}\n{done.stderr}")
        Path(str(lib) + ".tmp").rename(lib)
    return ctypes.CDLL(str(lib))
