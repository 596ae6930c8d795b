"""CUDA C kernels compiled at run time with NVRTC and launched through the driver API, via ctypes.

Triton chooses a kernel's register layouts itself; a few kernels (nf4_tc_gemv.py, nf4_tc_gemm.py)
need layouts Triton cannot express, such as the tensor cores' fragments fed straight from
registers. NVRTC is a library (the `nvidia-cuda-nvrtc` wheel that a CUDA build of torch installs,
or a CUDA toolkit's), not a compiler on the PATH: nothing has to be installed beyond the Python
packages, as on a Space. `torch.cuda._compile_kernel` does the same but asks for a CUDA toolkit's
headers ($CUDA_HOME).

`compile_module` turns source into a cubin for the current GPU and loads it (each call compiles:
callers keep the `Kernel`, as nf4_tc_gemv and nf4_tc_gemm do per shape); `Kernel.launch` queues
it on the current torch stream, so it is captured in CUDA graphs like any other kernel. A failure
to compile, load or launch raises `NVRTCError`; callers treat the kernel as unavailable.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import sys

import torch


class NVRTCError(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def _nvrtc() -> ctypes.CDLL:
    """libnvrtc: by soname (a CUDA toolkit, or already loaded by torch), else from the nvidia
    wheels next to torch."""
    major = (torch.version.cuda or "").split(".")[0]
    names = [f"libnvrtc.so.{major}", "libnvrtc.so"] if major else ["libnvrtc.so"]
    for path in sys.path:
        names += sorted(glob.glob(os.path.join(path, "nvidia", "*", "lib", "libnvrtc.so*")))
    for name in names:
        if "builtins" in name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise NVRTCError("libnvrtc was not found (install a CUDA build of torch)")


@functools.lru_cache(maxsize=1)
def _driver() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise NVRTCError(f"the CUDA driver library could not be loaded: {exc}") from exc


def _check_driver(result: int, what: str) -> None:
    if result != 0:
        name = ctypes.c_char_p()
        _driver().cuGetErrorName(result, ctypes.byref(name))
        raise NVRTCError(f"{what} failed: {(name.value or b'?').decode()} ({result})")


def _compile(source: str, name: str, arch: str) -> bytes:
    lib = _nvrtc()
    program = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), f"{name}.cu".encode(), 0,
                              None, None):
        raise NVRTCError("nvrtcCreateProgram failed")
    try:
        options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-default-device"]
        array = (ctypes.c_char_p * len(options))(*options)
        result = lib.nvrtcCompileProgram(program, len(options), array)
        if result:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(program, log)
            raise NVRTCError(f"NVRTC could not compile {name}: {log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        if lib.nvrtcGetCUBINSize(program, ctypes.byref(size)):
            raise NVRTCError("nvrtcGetCUBINSize failed")
        cubin = ctypes.create_string_buffer(size.value)
        if lib.nvrtcGetCUBIN(program, cubin):
            raise NVRTCError("nvrtcGetCUBIN failed")
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


def _make_context_current(device: torch.device) -> None:
    """The driver API needs a current context on this thread: torch's (the primary one)."""
    cuda = _driver()
    current = ctypes.c_void_p()
    _check_driver(cuda.cuCtxGetCurrent(ctypes.byref(current)), "cuCtxGetCurrent")
    if current.value:
        return
    handle, context = ctypes.c_int(), ctypes.c_void_p()
    _check_driver(cuda.cuDeviceGet(ctypes.byref(handle), device.index or 0), "cuDeviceGet")
    _check_driver(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), handle),
                  "cuDevicePrimaryCtxRetain")
    _check_driver(cuda.cuCtxSetCurrent(context), "cuCtxSetCurrent")


class Kernel:
    """One `extern "C" __global__` function of a loaded module."""

    def __init__(self, function: ctypes.c_void_p, module: ctypes.c_void_p, device: torch.device):
        self.function, self.module, self.device = function, module, device

    def launch(self, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: list, shared_bytes: int = 0) -> None:
        """Queue the kernel on torch's current stream. `args`: tensors (their data pointers), and
        ctypes scalars (c_int, c_float, ...) matching the kernel's parameters in order."""
        values = [ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor) else a
                  for a in args]
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values])
        _make_context_current(self.device)  # a thread that has not used CUDA yet has none
        stream = torch.cuda.current_stream(self.device).cuda_stream
        _check_driver(_driver().cuLaunchKernel(
            self.function, *grid, *block, shared_bytes, ctypes.c_void_p(stream), pointers, None),
            "cuLaunchKernel")


def _load(source: str, name: str, device_index: int) -> Kernel:
    device = torch.device("cuda", device_index)
    major, minor = torch.cuda.get_device_capability(device)
    cubin = _compile(source, name, f"sm_{major}{minor}")
    _make_context_current(device)
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    _check_driver(_driver().cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
    _check_driver(_driver().cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
                  "cuModuleGetFunction")
    return Kernel(function, module, device)


def compile_module(source: str, name: str, device: torch.device) -> Kernel:
    """The kernel `name` (declared `extern "C"`) of `source`, compiled for `device`'s GPU."""
    if device.type != "cuda" or torch.version.cuda is None:
        raise NVRTCError("NVRTC kernels run on NVIDIA GPUs only")
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _load(source, name, index)
