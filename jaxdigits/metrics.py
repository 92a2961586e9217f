"""Metric writers (metrics.jsonl and TensorBoard events), atomic files, and the progress bar."""

import functools
import json
import os
import pathlib
import shutil
import struct
import sys
import tempfile
import threading
import time

import numpy as np
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
    """`value` as indented JSON (one trailing newline) at `path`, written atomically, and not
    written at all where the file already holds exactly that."""
    text, path = json.dumps(value, indent=2) + "\n", pathlib.Path(path)
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text)


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


def read_scalars(folder) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every scalar in the TensorBoard event files in `folder`.

    Reads the TFRecord framing (length, CRC, event, CRC) directly; a record cut short by a kill
    ends its file's reading. Later files (by name, which starts with the time) win."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            if at + 12 + length + 4 > len(data):
                break
            try:
                event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            except DecodeError:  # Damaged: what follows cannot be trusted either.
                break
            for value in event.summary.value:
                scalars[value.tag, event.step] = value.simple_value
            at += 12 + length + 4
    return scalars


def tensorboard_scalars(records: list[dict]) -> dict[tuple[str, int], float]:
    """What `MetricWriter` writes to TensorBoard for `records`: numbers as float32, by step."""
    return {(key.replace("_", "/", 1), record["step"]): float(np.float32(value))
            for record in records for key, value in record.items()
            if isinstance(value, (int, float)) and key not in ("epoch", "step")}


def _lines(path: pathlib.Path) -> list[str]:
    """The lines of a text file, [] if it is missing or not text."""
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _records(lines: list[str]) -> list[dict]:
    """The JSON objects of `lines` up to the first that is not one (a line a kill cut short)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(record, dict):
            break
        records.append(record)
    return records


class MetricWriter:
    """Writes one record per epoch to `metrics.jsonl` and to TensorBoard event files.

    `history` is the records so far (from a checkpoint when resuming). Both files are made to
    hold exactly those records: records of epochs after the checkpoint that a killed run wrote
    are dropped, and TensorBoard events a kill lost are written again. Nothing is rewritten where
    the files already agree, so re-scoring a finished run changes nothing on disk.
    """

    def __init__(self, workdir, history: list[dict]):
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb_dir = pathlib.Path(workdir) / "tensorboard"
        self._records, self._tb = list(history), None
        lines = _lines(self.path)
        if lines[:len(history)] == [json.dumps(r) for r in history]:
            self._ahead = _records(lines[len(history):])  # Written after the checkpoint: kept if met.
        else:
            self._ahead = []
        if lines != [json.dumps(r) for r in history + self._ahead]:
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in history + self._ahead))
        self._sync_tensorboard(self._records + self._ahead)

    def _sync_tensorboard(self, records: list[dict]) -> None:
        """Rewrites the event files (through a new folder swapped in) unless they hold `records`."""
        if read_scalars(self._tb_dir) == tensorboard_scalars(records):
            return
        self.close()
        fresh, old = self._tb_dir.with_name("tensorboard.new"), self._tb_dir.with_name("tensorboard.old")
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        self._tb = self._open(fresh)
        for record in records:
            self._add(record)
        self.close()
        if self._tb_dir.exists():
            self._tb_dir.rename(old)
        fresh.rename(self._tb_dir)
        shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _open(folder):
        from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.

        # The suffix keeps two writers opened in one second (a rebuild, then the run's own)
        # from sharing a file name, and keeps the names in the order they were opened.
        return SummaryWriter(str(folder), filename_suffix=f".{time.time_ns()}")

    def _add(self, record: dict) -> None:
        for (tag, step), value in tensorboard_scalars([record]).items():
            self._tb.add_scalar(tag, value, step)
        self._tb.flush()

    def write(self, record: dict, step: int) -> None:
        """Appends `record` (given a "step" of `step` if it has none) to both files."""
        record = record if "step" in record else {**record, "step": step}
        line = json.dumps(record)
        if self._ahead and json.dumps(self._ahead[0]) == line:
            self._ahead.pop(0)  # Already on disk, the same.
            self._records.append(record)
            return
        if self._ahead:  # Different from what a previous process wrote: those records go.
            self._ahead = []
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self._records))
            self._sync_tensorboard(self._records)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._records.append(record)
        if self._tb is None:
            self._tb = self._open(self._tb_dir)
        self._add(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """An epoch's progress on stderr, silent when `quiet`; never slows the epoch down.

    On a terminal, a tqdm bar redrawn every `REDRAW` seconds by a background thread, so it moves
    (elapsed time, and "compiling" until the first steps finish) even while one compiled call
    runs for many seconds; elsewhere (a log file, a pipe), a plain line every `LINE_EVERY`
    seconds. The driver reports images done with `update` when `due` says so.
    """

    REDRAW = 0.5
    LINE_EVERY = 10.0

    def __init__(self, total: int, description: str, quiet: bool, stream=None):
        self.quiet, self._stream = quiet, stream or sys.stderr
        self._total, self._description, self._postfix = total, description, {}
        self._done, self._start, self._last = 0, time.perf_counter(), 0.0
        self._lock, self._stop, self._bar, self._thread = threading.Lock(), threading.Event(), None, None
        if quiet:
            return
        interval = self.LINE_EVERY
        if self._stream.isatty():
            width = shutil.get_terminal_size((0, 0)).columns
            self._bar = tqdm.tqdm(total=total, desc=description, unit="img", unit_scale=True,
                                  leave=False, file=self._stream, dynamic_ncols=width > 0,
                                  ncols=None if width > 0 else 100, mininterval=0,
                                  postfix="compiling")
            interval = self.REDRAW
        self._thread = threading.Thread(target=self._tick, args=(interval,), daemon=True)
        self._thread.start()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()
                else:
                    print(self.line(), file=self._stream, flush=True)

    def line(self) -> str:
        """The plain form: description, images done, share, speed, elapsed, figures."""
        elapsed = time.perf_counter() - self._start
        parts = [f"{self._description}: {self._done:,}/{self._total:,} img "
                 f"({100 * self._done / max(self._total, 1):.0f}%)", f"{elapsed:.0f} s"]
        parts += [f"{k} {v}" for k, v in self._postfix.items()] or ([] if self._done else ["compiling"])
        return ", ".join(parts)

    def due(self) -> bool:
        """True when the shown numbers should be refreshed (at most once a second)."""
        return not self.quiet and time.perf_counter() - self._last >= 1.0

    def update(self, done: int, **postfix) -> None:
        if self.quiet:
            return
        with self._lock:
            self._last, self._done, self._postfix = time.perf_counter(), done, postfix
            if self._bar is not None:
                self._bar.n = done  # tqdm shows images/s itself from this count.
                self._bar.set_postfix(postfix or {}, refresh=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
