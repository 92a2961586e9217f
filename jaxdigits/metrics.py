"""Metric writers (metrics.jsonl and TensorBoard events), atomic files, and the progress bar."""

import functools
import json
import os
import pathlib
import sys
import tempfile
import time

import tqdm


def write_atomic(path, text: str | bytes) -> None:
    """Writes `text` (or bytes) to `path` through a temporary file and a rename: never half-written."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal file's mode.
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, value) -> None:
    """`value` as indented JSON (one trailing newline) at `path`, written atomically."""
    write_atomic(path, json.dumps(value, indent=2) + "\n")


@functools.cache
def _umask() -> int:
    """The process's umask (read once: setting it to read it is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_jsonl(path) -> list[dict]:
    path = pathlib.Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Writes one record per epoch to `metrics.jsonl` and to TensorBoard event files.

    `history` is the records so far (from a checkpoint when resuming): the jsonl file is rewritten
    from it, so records of epochs after the checkpoint that a killed run wrote are dropped.
    """

    def __init__(self, workdir, history: list[dict]):
        from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.

        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in history))
        self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

    def write(self, record: dict, step: int) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self._tb.add_scalar(key.replace("_", "/", 1), value, step)
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()


class Progress:
    """A tqdm bar over an epoch's examples; silent when `quiet`. Refreshes at most every second."""

    def __init__(self, total: int, description: str, quiet: bool):
        self.quiet = quiet
        self._bar = None if quiet else tqdm.tqdm(
            total=total, desc=description, unit="img", unit_scale=True, leave=False,
            file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        self._last = 0.0

    def due(self) -> bool:
        """True when the shown numbers should be refreshed (at most once a second)."""
        return not self.quiet and time.perf_counter() - self._last >= 1.0

    def update(self, done: int, **postfix) -> None:
        if self._bar is None:
            return
        self._last = time.perf_counter()
        self._bar.n = done  # tqdm shows images/s itself from this count.
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
