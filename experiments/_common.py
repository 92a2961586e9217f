"""What every experiment shares: its workdir, its results JSON, its log, its figures, its flags.

Each experiment is `python -m experiments.NAME [--workdir=DIR]` from the repository root. The math
lives in the experiment's own file; this module only handles files and plotting, so the scripts
read top to bottom as the lesson they teach. Every lesson ends with `finish`, which logs it like a
training run: `metrics.jsonl` and TensorBoard events through the writer `train` uses, its final
parameters or state as a checkpoint (`checkpoints/1`, loaded back by `load_state`), and
`results.json` with its headline numbers.
"""

import math
import pathlib
import shutil

import jax
import matplotlib

matplotlib.use("Agg")  # Files only, never a window: runs headless and in tests.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxdigits import checkpoint, plots  # noqa: E402
from jaxdigits.errors import UserError  # noqa: E402
from jaxdigits.metrics import MetricWriter, write_json  # noqa: E402

DPI = 90  # Figures are committed under docs/lessons/: small files, still readable.


def prepare_workdir(workdir) -> pathlib.Path:
    """Creates `workdir` (and parents); refuses a path that is an existing file."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--workdir {path} exists and is not a folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value):
    """numpy/jax scalars and arrays -> JSON types; non-finite floats -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy or jax array / scalar
        return _plain(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(workdir, results: dict, name: str = "results.json") -> pathlib.Path:
    """Writes `results` as indented JSON to `workdir/name`, atomically."""
    path = pathlib.Path(workdir) / name
    write_json(path, _plain(results))
    return path


def save_figure(fig, path) -> pathlib.Path:
    """Saves a matplotlib figure as PNG atomically (`plots.save`), then closes it."""
    try:
        plots.save(fig, path, dpi=DPI)
    finally:
        plt.close(fig)
    return pathlib.Path(path)


def subplots(nrows=1, ncols=1, *, width=5.5, height=4.2, **kwargs):
    """`plt.subplots` with a size per panel, so multi-panel figures stay readable."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                        layout="constrained", **kwargs)


def define_workdir_flag(name: str):
    """The `--workdir` flag every experiment has; its default is `runs/experiments/NAME`."""
    from absl import flags

    return flags.DEFINE_string("workdir", f"runs/experiments/{name}",
                               "Folder for results.json and the PNG plots.")


def floats(flag: str, values) -> tuple[float, ...]:
    """A list flag's strings as floats, or a UserError naming the flag."""
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise UserError(f"--{flag} must be comma-separated numbers, got "
                        f"{','.join(values)}.") from None


def check_positive(**values) -> None:
    """Raises UserError naming the first flag that is not positive."""
    for flag, value in values.items():
        if not value > 0:
            raise UserError(f"--{flag} must be positive, got {value}.")


def curve_records(curves: dict, max_points: int = 400) -> list[dict]:
    """Per-step records {"step": i, name: value} from curves (name -> 1-D sequence), at most
    `max_points` steps per curve (evenly spaced, first and last kept), for `finish`."""
    by_step: dict[int, dict] = {}
    for name, values in curves.items():
        values = np.asarray(values, np.float64).reshape(-1)
        if not values.size:
            continue
        for i in np.unique(np.linspace(0, values.size - 1, max_points).round().astype(int)):
            by_step.setdefault(int(i), {"step": int(i)})[name] = _plain(float(values[i]))
    return [by_step[i] for i in sorted(by_step)]


def finish(workdir, results: dict, *, state, curves: dict | None = None,
           records: list | None = None) -> dict:
    """Logs a lesson like a training run, then writes its `results.json`; returns `results`.

    `records` (or `curve_records(curves)`) go to `metrics.jsonl` and TensorBoard through
    `metrics.MetricWriter`; `state`, a pytree of arrays (the final parameters, iterates or
    statistics), is saved with `checkpoint.Checkpointer` as epoch 1, with the flags as metadata.
    """
    workdir = pathlib.Path(workdir)
    records = list(records or []) + (curve_records(curves) if curves else [])
    writer = MetricWriter(workdir, [])
    try:
        for record in records:
            writer.write(record, int(record.get("step", 0)))
    finally:
        writer.close()
    for old in ("checkpoints", "best"):  # A previous run of the lesson in this folder.
        shutil.rmtree(workdir / old, ignore_errors=True)
    state = jax.tree.map(np.asarray, state)
    meta = {"experiment": results.get("experiment"), "flags": _plain(results.get("flags", {})),
            "epoch": 1, "history": []}
    saver = checkpoint.Checkpointer(workdir, 1)
    try:
        saver.save(1, state, meta, is_best=True)
    finally:
        saver.close()
    write_results(workdir, results)
    return results


def load_state(workdir, target):
    """(state, meta) of a lesson's checkpoint; `target` has the saved state's structure."""
    target = jax.tree.map(np.asarray, target)
    return checkpoint.restore(pathlib.Path(workdir) / "checkpoints", 1, target)
