"""The progress display: it moves at least once a second on a terminal, even while one compiled
call runs for seconds, prints plain lines elsewhere, and is silent when quiet."""

import io
import time

from jaxdigits.metrics import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_bar_is_redrawn_without_updates(monkeypatch):
    assert Progress.REDRAW <= 0.5  # At least once a second, whatever the model.
    monkeypatch.setattr(Progress, "REDRAW", 0.05)
    stream = Terminal()
    progress = Progress(60000, "epoch 1/5", quiet=False, stream=stream)
    time.sleep(0.5)  # One long compiled call: no update from the driver meanwhile.
    redraws = stream.getvalue().count("\r")
    progress.update(6000, loss="0.5")
    progress.close()
    assert redraws >= 5  # Ten asked; a loaded machine may lose some.
    assert "compiling" in stream.getvalue() and "loss=0.5" in stream.getvalue()


def test_without_a_terminal_it_prints_plain_lines(monkeypatch):
    monkeypatch.setattr(Progress, "LINE_EVERY", 0.2)
    stream = io.StringIO()
    progress = Progress(60000, "epoch 2/5", quiet=False, stream=stream)
    time.sleep(0.5)
    progress.update(30000, loss="0.25")
    time.sleep(0.5)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("epoch 2/5: 0/60,000 img (0%)") and lines[0].endswith("compiling")
    assert lines[-1].startswith("epoch 2/5: 30,000/60,000 img (50%)")
    assert lines[-1].endswith("loss 0.25") and "\r" not in stream.getvalue()


def test_quiet_prints_nothing_and_starts_no_thread(monkeypatch):
    monkeypatch.setattr(Progress, "LINE_EVERY", 0.01)
    stream = io.StringIO()
    progress = Progress(100, "epoch 1/1", quiet=True, stream=stream)
    time.sleep(0.05)
    progress.update(50)
    progress.close()
    assert stream.getvalue() == "" and not progress.due()
