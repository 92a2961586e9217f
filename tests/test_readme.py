"""The README's Python examples run as written (in a scratch folder), so they cannot go stale."""

import re

import pytest

from conftest import ROOT
from jaxdigits import optimizers


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(optimizers, "OPTIMIZERS", dict(optimizers.OPTIMIZERS))  # Undo registrations.
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (8, 10)
    assert namespace["final"]["test_count"] == 10000 and namespace["final"]["test_accuracy"] > 0.95
    assert (tmp_path / "runs" / "mlp-from-python" / "results.json").exists()
