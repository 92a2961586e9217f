"""A convolution whose two gradients run in oneDNN on the CPU backend (`--cpu_conv=onednn`).

XLA's CPU backend computes a convolution's kernel gradient about half as fast as oneDNN, which
PyTorch uses, and its input gradient somewhat slower (BUILD_NOTES.md). `conv` keeps XLA's
forward (as fast as oneDNN's there) and sends both gradients to oneDNN through two XLA FFI
handlers (`onednn_conv.cc`), so they stay inside the jitted step like any other op.

oneDNN is optional: `pip install -e ".[onednn]"` (Linux x86-64) brings its library and headers,
and this module compiles the handlers with the system's C++ compiler on first use, into
jaxdigits' cache folder (atomically; rebuilt when the source, compiler or jaxlib changes).
`unavailable()` says in one sentence why it cannot be used, or None when it can.
"""

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
from jax import lax

from jaxdigits import data

SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
TARGETS = ("jaxdigits_conv_backward_weights", "jaxdigits_conv_backward_data")


def _build_command(output: str) -> list[str]:
    prefix = pathlib.Path(sys.prefix)
    return [os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-shared", "-fPIC",
            "-isystem", jax.ffi.include_dir(), "-isystem", str(prefix / "include"),
            str(SOURCE), "-o", output, f"-L{prefix / 'lib'}", f"-Wl,-rpath,{prefix / 'lib'}",
            "-ldnnl"]


def _library() -> pathlib.Path:
    """The compiled handlers, built into the cache on first use; raises RuntimeError if it can't."""
    command = _build_command("")
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"no C++ compiler {command[0]!r} to build {SOURCE.name}")
    if not (pathlib.Path(sys.prefix) / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists():
        raise RuntimeError('oneDNN is not installed here (pip install -e ".[onednn]")')
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(command).encode()
                         + importlib.metadata.version("jaxlib").encode()).hexdigest()[:16]
    path = data.cache_dir("onednn") / f"libjaxdigits_onednn_{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run(_build_command(tmp), capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"building {SOURCE.name} failed ({last})")
        os.replace(tmp, path)  # Never a half-written library under the real name.
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@functools.cache
def unavailable() -> str | None:
    """None once the oneDNN handlers are built, loaded and registered; else why not (a sentence)."""
    if jax.default_backend() != "cpu":
        return "oneDNN gradients are for the CPU backend only"
    try:
        lib = ctypes.CDLL(str(_library()))
        for name in TARGETS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return f"oneDNN gradients unavailable: {e}"
    return None


def _forward(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def conv(x, kernel):
    """SAME, stride-1 convolution of float32 NHWC `x` with an odd square HWIO `kernel`: XLA's
    forward, oneDNN's gradients (see `unavailable()`). Same math as lax's, other rounding."""
    return _forward(x, kernel)


def _conv_fwd(x, kernel):
    return _forward(x, kernel), (x, kernel)


def _conv_bwd(residuals, dy):
    reason = unavailable()  # Builds and registers the handlers on first use.
    if reason is not None:
        raise RuntimeError(reason)
    x, kernel = residuals
    call = functools.partial(jax.ffi.ffi_call, vmap_method="sequential")
    dx = call(TARGETS[1], jax.ShapeDtypeStruct(x.shape, x.dtype))(dy, kernel)
    dkernel = call(TARGETS[0], jax.ShapeDtypeStruct(kernel.shape, kernel.dtype))(x, dy)
    return dx, dkernel


conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`'s signature (flax's `nn.Conv(conv_general_dilated=...)` hook):
    `conv` where it applies (float32, stride 1, SAME, odd square kernel, no dilation or groups,
    NHWC/HWIO), `lax.conv_general_dilated` otherwise."""
    k = rhs.shape[0]
    same = padding == "SAME" or tuple(map(tuple, padding)) == ((k // 2, k // 2),) * 2
    plain = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if (lhs.ndim == 4 and lhs.dtype == rhs.dtype == "float32" and k % 2 and rhs.shape[1] == k
            and same and tuple(window_strides) == (1, 1) and feature_group_count == 1
            and set(lhs_dilation or (1,)) == {1} and set(rhs_dilation or (1,)) == {1}
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == plain):
        return conv(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision)
