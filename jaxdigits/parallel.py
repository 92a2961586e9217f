"""Data parallelism over devices and hosts: the device mesh, its shardings, multi-host start-up.

One mesh axis, "data", spans every device in use (of every process). The training data (47 MB
of uint8 for MNIST), the train state and the optimizer state are replicated; each step's batch
indices are sharded on their leading axis, so each device gathers, augments and trains on its
own slice of the global batch, and XLA's SPMD partitioner all-reduces the gradients. It is the
same pure `train_step` as on one device, compiled once for the mesh by `jax.jit`: the math of a
global batch is unchanged, only where its rows are computed.

Multi-host: `initialize` starts `jax.distributed` from flags or the environment; then
`jax.devices()` lists every host's devices and the mesh spans them all. Every process holds the
data (each reads the same files) but its devices gather only their rows of each batch; metrics
are sums over the global batch, replicated, so every process reads the same numbers; files are
written by process 0 only, checkpoints by orbax's own multi-process protocol.
"""

import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdigits.errors import UserError

AXIS = "data"

# Loops that queue calls of a program spanning several CPU devices wait for every WINDOW-th call.
# XLA:CPU (jax 0.10.2) lets each device hold a bounded number of programs in flight and launches
# each device's part of a call from a thread pool; with dozens of calls queued the parts can be
# admitted out of order, and the devices then wait for each other at an all-reduce until XLA ends
# the process (measured in BUILD_NOTES, "Many devices and many models").
WINDOW = 8

# The environment variables `initialize` reads when the flags are not given.
ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
    """Starts `jax.distributed` if a coordinator is named (flags first, then $JAX_COORDINATOR_ADDRESS,
    $JAX_NUM_PROCESSES, $JAX_PROCESS_ID) or `auto` asks JAX to detect the cluster (TPU pod slice,
    SLURM, Open MPI, Kubernetes). Returns whether it did. Must run before JAX touches a device."""
    coordinator_address = coordinator_address or os.environ.get(ENV["coordinator_address"])
    if num_processes is None and os.environ.get(ENV["num_processes"]):
        num_processes = _env_int("num_processes")
    if process_id is None and os.environ.get(ENV["process_id"]):
        process_id = _env_int("process_id")
    if not coordinator_address and not auto:
        if num_processes is not None or process_id is not None:
            raise UserError("--num_processes and --process_id need --coordinator_address=HOST:PORT "
                            f"(or ${ENV['coordinator_address']}).")
        return False
    if coordinator_address and (num_processes is None or process_id is None):
        raise UserError("--coordinator_address needs --num_processes and --process_id (or "
                        f"${ENV['num_processes']} and ${ENV['process_id']}).")
    if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
        raise UserError(f"--process_id must be in [0, {num_processes}), got {process_id}.")
    # CPU hosts talk over gloo (TCP); GPU and TPU use their own collectives whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def _env_int(name: str) -> int:
    value = os.environ[ENV[name]]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"${ENV[name]} must be an integer, got {value!r}.") from None


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """A one-axis mesh over the first `num_devices` devices (0: all, of every process)."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise UserError(f"--devices={num_devices} but {len(devices)} devices are visible "
                        f"({devices[0].platform}); pass 0 for all, or up to {len(devices)}.")
    if num_devices and num_devices < len(devices) and jax.process_count() > 1:
        raise UserError("--devices cannot limit a multi-process run; every process's devices are used.")
    devices = devices[:num_devices or len(devices)]
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def check_divisible(batch_size: int, mesh, flag: str = "--batch_size") -> None:
    """The global batch must split evenly: every device computes the same shapes."""
    if batch_size % mesh.size:
        raise UserError(f"{flag}={batch_size} does not split evenly across {mesh.size} devices; "
                        f"pass a multiple of {mesh.size}, or fewer --devices.")


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(x, mesh):
    """Inside jit: `x` [batch, ...] split on its leading axis across the mesh."""
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(AXIS)))


def replicate(tree, mesh):
    """Puts every array of `tree` (the same values on every process) on every device of `mesh`."""
    sharding = replicated(mesh)
    # Through numpy: a process's local array cannot be put on another process's devices directly.
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), tree)


def settle(call: int, outputs) -> None:
    """After call number `call` (0, 1, ...) of a queued loop: waits for its `outputs` every
    `WINDOW` calls when they span several CPU devices of this process (see WINDOW)."""
    if (call + 1) % WINDOW:
        return
    devices = jax.tree.leaves(outputs)[0].sharding.addressable_devices
    if len(devices) > 1 and next(iter(devices)).platform == "cpu":
        jax.block_until_ready(outputs)


def describe(mesh) -> str:
    """"cpu (cpu) x1", with the process count when there are several: for a run's first log line."""
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{jax.default_backend()} ({jax.devices()[0].device_kind}) x{mesh.size}{processes}"


def is_primary() -> bool:
    """Process 0 writes the run's files; the others compute alongside it."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits for every process (a no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class NullWriter:
    """Stands in for `metrics.MetricWriter` on processes other than 0."""

    def write(self, record: dict, step: int) -> None:
        del record, step  # Unused.

    def close(self) -> None:
        pass
