"""The README and docs/ stay short, linked, rendered from results/*.json, and free of lab-notebook talk.

Standard library only (no jax), so these run in well under a second.
"""

import importlib.util
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

INSTALL_AND_TRAIN = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[onednn,test]" '
                     "&& python -m jaxdigits.train --model=cnn")
RUN_TESTS = ". .venv/bin/activate && python -m pytest -q"

# Words of the project's history, not of its use: "issue 6", "the sixth round", "goal 1 is met",
# "stop 3", "this session". The plural "rounds" stays allowed: it is a flag (`--rounds=3`).
HISTORY = re.compile(
    r"\b(issue|round|goal|stop|session)s?\b\s*#?\d"
    r"|\b(round|goals?|issues?|sessions?|helpers?)\b"
    r"|\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)\s+(round|issue|session|stop)",
    re.IGNORECASE)
# Paths outside the repository (a run folder in /tmp, a home directory, a peer's checkout).
OUTSIDE = re.compile(r"(?<![\w.$])/(tmp|usr|home|mnt|root|work|opt|var)/|\.\./(?!shared/)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:jaxdigits|experiments|benchmarks|examples|docs|results|tests)/[\w./-]+)`")


def _render():
    spec = importlib.util.spec_from_file_location("results_render", ROOT / "results" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_results_table_is_what_the_renderer_renders():
    pages = _render().updated_pages()
    assert "README.md" in pages
    stale = [page for page, (current, new) in pages.items() if current != new]
    assert not stale, f"run python results/render.py: {stale} differ from results/*.json"


def test_the_readme_table_has_a_row_per_result_file():
    render = _render()
    rows = render.load()["main"]
    assert {r["_file"] for r in rows} >= {"cnn.json", "mlp.json", "linear.json"}
    start, end = render.markers("main")
    table = README.read_text().split(start)[1].split(end)[0]
    for row in rows:
        assert f"`{row['command']}`" in table
        for key in ("machine", "date", "jax", "parameters", "test_accuracy", "run_seconds"):
            assert key in row, f"{row['_file']} has no {key}"


def test_results_files_are_valid_json_naming_their_machine():
    for path in sorted((ROOT / "results").glob("*.json")):
        record = json.loads(path.read_text())
        assert record.get("table") and record.get("machine") and record.get("date"), path.name


def test_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    commands = re.findall(r"^    (\S.*)$", text, re.MULTILINE)
    assert commands[:2] == [INSTALL_AND_TRAIN, RUN_TESTS]
    assert text.index(RUN_TESTS) < text.index("## ")  # Both come before the first section.
    assert 'python -m pytest -q -m "not slow"' in text[:text.index("## ")]


def test_every_docs_page_the_readme_links_exists_and_every_page_is_linked():
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README.read_text()))
    assert linked, "the README links no docs page"
    for target in linked:
        assert (ROOT / target).is_file(), f"README links {target}, which does not exist"
    assert {f"docs/{page.name}" for page in DOCS} <= linked


def test_every_relative_link_and_named_file_exists():
    for page in [*PAGES, ROOT / "BUILD_NOTES.md"]:
        text = page.read_text()
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name} links {target}"
        for path in REPO_PATH.findall(text):
            if "*" in path or path.endswith("/"):
                continue
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


def test_user_pages_speak_of_use_not_of_history():
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            match = HISTORY.search(line)
            assert not match, f"{page.name}:{number}: {match.group(0)!r} in {line.strip()!r}"


def test_user_pages_name_no_path_outside_the_repository():
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            match = OUTSIDE.search(line)
            assert not match, f"{page.name}:{number}: {match.group(0)!r} in {line.strip()!r}"


def test_docs_pages_open_with_todays_answer():
    for page in DOCS:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# ")
        assert "**Today's answer.**" in "\n".join(lines[:4]), page.name
        assert re.search(r"^    (python|\S+=\S+ python)", "\n".join(lines[:20]), re.MULTILINE), (
            f"{page.name} gives no command near its top")


def test_the_lion_walkthrough_is_the_example_file():
    page = (ROOT / "docs" / "optimizers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert (ROOT / "examples" / "lion.py").read_text() in blocks


def test_build_notes_is_a_design_record_of_at_most_100_kb():
    text = (ROOT / "BUILD_NOTES.md").read_text()
    assert len(text.encode()) <= 100_000
    assert "\n## Layout\n" in text and "\n## Structure checks\n" in text
