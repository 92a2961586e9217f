"""What a device could do, for model FLOP utilisation, and how much memory a run took.

`peak_flops(dtype)` is the device's peak rate for matmuls in `dtype`: from `PEAK_TFLOPS`, the
vendors' dense (no sparsity) tensor-core or MXU rates per device kind, or, on the CPU, where no
table can know the machine, a measured one: the best of a few jitted 2048x2048 matmuls in that
dtype. Model FLOP utilisation (MFU) is a step's floating-point operations (XLA's cost analysis)
per second over that peak, so it compares across machines.

float32 on GPUs and TPUs is rated at the TF32 tensor-core rate (NVIDIA Ampere and later) and the
MXU's bfloat16 rate (TPU): XLA's default precision for float32 matmuls uses them.

`peak_memory()` is the device's high-water mark of allocated bytes where the backend keeps one
(`memory_stats()["peak_bytes_in_use"]`: GPU, TPU); the CPU backend keeps none, so there it is the
process's resident-set high-water mark (`ru_maxrss`), the Python process included, and says so.
"""

import functools
import resource
import sys
import time

import jax
import jax.numpy as jnp

# device_kind (as `jax.devices()[0].device_kind` spells it, matched by prefix) ->
# {dtype: dense peak TFLOP/s of one device}. Vendor data sheets.
PEAK_TFLOPS = {
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 494.0},
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 494.0},  # SXM
    "NVIDIA H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
    "NVIDIA A100": {"bfloat16": 312.0, "float32": 156.0},
    "NVIDIA L4": {"bfloat16": 121.0, "float32": 60.0},
    "NVIDIA A10G": {"bfloat16": 70.0, "float32": 35.0},
    "TPU v6 lite": {"bfloat16": 918.0, "float32": 918.0},  # v6e
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},  # v5e
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
}


def table_peak(device_kind: str, dtype: str) -> float | None:
    """FLOP/s of `device_kind` in `dtype` from PEAK_TFLOPS (longest matching prefix), or None."""
    matches = [kind for kind in PEAK_TFLOPS if device_kind.startswith(kind)]
    if not matches:
        return None
    rate = PEAK_TFLOPS[max(matches, key=len)].get(dtype)
    return None if rate is None else rate * 1e12


@functools.cache
def measured_matmul_peak(dtype: str = "float32", n: int = 2048, calls: int = 20) -> float:
    """FLOP/s of the fastest of `calls` jitted n x n matmuls in `dtype` on the default device
    (the fastest, so that a busy machine's slow calls count least)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, a))  # Compile and warm up.
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def peak_flops(dtype: str = "float32") -> dict:
    """{"flops": peak FLOP/s in `dtype` of this backend's first device, "source": where from}."""
    device = jax.devices()[0]
    rate = table_peak(device.device_kind, dtype)
    if rate is not None:
        return {"flops": rate, "source": f"data sheet ({device.device_kind}, {dtype}, dense)"}
    if device.platform != "cpu":
        return {"flops": None, "source": f"{device.device_kind} is not in jaxdigits.peaks' table"}
    return {"flops": measured_matmul_peak(dtype),
            "source": f"measured: the fastest 2048x2048 {dtype} matmul on this CPU"}


def peak_memory() -> dict:
    """{"bytes": the high-water mark, "source": what was measured} (see the module docstring)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"bytes": int(stats["peak_bytes_in_use"]),
                "source": "device memory_stats() peak_bytes_in_use"}
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux.
    return {"bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "source": "process resident-set high-water mark (the CPU backend counts no device "
                      "memory)"}


def program_memory(compiled) -> int | None:
    """Bytes a compiled program needs (XLA's memory analysis: arguments, outputs and temporaries,
    less the donated buffers it aliases), or None where the backend gives no analysis."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
