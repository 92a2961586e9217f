"""What every experiment shares: its workdir, its results JSON, its figures, its flags.

Each experiment is `python -m experiments.NAME [--workdir=DIR]` from the repository root. The math
lives in the experiment's own file; this module only handles files and plotting, so the scripts
read top to bottom as the lesson they teach.
"""

import math
import pathlib

import matplotlib

matplotlib.use("Agg")  # Files only, never a window: runs headless and in tests.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxdigits import plots  # noqa: E402
from jaxdigits.errors import UserError  # noqa: E402
from jaxdigits.metrics import write_json  # noqa: E402


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
        plots.save(fig, path, dpi=110)
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
