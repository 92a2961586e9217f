"""`--help` lists the flags by topic, the everyday ones first, every recipe named."""

import dataclasses
import re

import pytest

from conftest import run_cli
from jaxdigits import cli, recipes
from jaxdigits.config import Config


def test_train_help_is_grouped_by_topic():
    proc = run_cli("jaxdigits.train", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    headers = re.findall(r"^([a-z-]+):$", text, re.M)
    assert headers == list(cli.TOPICS)  # run, model, optimizer, data, augmentation, scale-out, speed
    listed = re.findall(r"^  --(?:\[no\])?(\w+):", text, re.M)
    assert len(listed) == len(set(listed))  # Each flag once.
    assert {f.name for f in dataclasses.fields(Config)} <= set(listed)
    assert listed == [n for names in cli.TOPICS.values() for n in names]  # In the topics' order.
    assert listed[:3] == ["model", "recipe", "workdir"]
    recipe_help = text[text.index("--recipe:"):text.index("--workdir:")]
    assert all(name in recipe_help for name in recipes.RECIPES)
    assert "verbosity" not in text and "orbax" not in text  # absl's and libraries' flags: --helpfull.


@pytest.mark.slow
def test_every_command_has_the_compilation_cache_flag_in_its_help():
    """A program without the config's speed flags (evaluate) still lists the shared one."""
    proc = run_cli("jaxdigits.evaluate", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^speed:\n  --\[no\]compilation_cache:", proc.stdout, re.M), proc.stdout
