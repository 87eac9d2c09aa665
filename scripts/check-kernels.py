#!/usr/bin/env python3
"""Compiles kernels/cuda/fum.cu with NVRTC, as fum does at start-up (kernels/src/cuda/compile.rs:
--fmad=false, C++17), for the architectures fum runs on, on a machine without a GPU: NVRTC is
a compiler and needs none. A kernel that does not compile fails here instead of on the GPU,
and so does a hot kernel whose registers grew past its budget (ptxas reports them): a few
registers more can halve the thread blocks a multiprocessor holds and slow every network
(the power law's f64 w^mu once took `deliver` from 62 to 88 registers, 10-16 % slower).

Usage: check-kernels.py [LIBNVRTC]   (default: the nvidia-cuda-nvrtc-cu12 wheel's library,
                                      `pip install nvidia-cuda-nvrtc-cu12`, else libnvrtc.so)"""
import ctypes
import glob
import os
import pathlib
import sys

ARCHS = ["sm_80", "sm_90"]  # A100, H100/H200
# Registers per thread each step kernel may use (65536 a multiprocessor on both architectures),
# and why. A kernel over its budget, or one that spills to local memory, fails the check.
BUDGETS = {
    "deliver": (64, "4 thread blocks of 256 a multiprocessor"),
    "deliver_full": (128, "2 thread blocks of 256 a multiprocessor"),
    "neurons": (64, "4 thread blocks of 256 a multiprocessor"),
}
source = pathlib.Path(__file__).resolve().parent.parent / "kernels" / "cuda" / "fum.cu"


def library():
    if len(sys.argv) > 1:
        return sys.argv[1]
    try:
        import nvidia.cuda_nvrtc
        found = sorted(glob.glob(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib", "libnvrtc.so*")))
        found = [f for f in found if "alt" not in f and "builtins" not in f]
        if found:
            return found[0]
    except ImportError:
        pass
    return "libnvrtc.so"


nvrtc = ctypes.CDLL(library())
failed = False
for arch in ARCHS:
    program = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.read_bytes(), b"fum.cu", 0, None, None) != 0:
        sys.exit("nvrtcCreateProgram failed")
    options = [b"--fmad=false", f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"--ptxas-options=-v"]
    status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    if status != 0:
        failed = True
        print(f"{source.name} does not compile for {arch}:\n{log.value.decode()}")
        continue
    print(f"{source.name} compiles for {arch}")
    # ptxas -v: "Compiling entry function 'name' ..." then lines of its spills and registers.
    kernel = None
    for line in log.value.decode().splitlines():
        if "Compiling entry function" in line:
            kernel = line.split("'")[1]
        elif kernel in BUDGETS and "bytes spill stores" in line and not line.strip().startswith("0 bytes stack frame, 0 bytes spill stores"):
            spills = line.split(",")[1].split()[0]
            if spills != "0":
                failed = True
                print(f"  {kernel} ({arch}) spills registers: {line.strip()}")
        elif kernel in BUDGETS and "Used" in line and "registers" in line:
            used = int(line.split("Used")[1].split()[0])
            budget, why = BUDGETS[kernel]
            ok = used <= budget
            failed |= not ok
            print(f"  {kernel}: {used} registers (budget {budget}: {why}){'' if ok else ' OVER BUDGET'}")
sys.exit(1 if failed else 0)
