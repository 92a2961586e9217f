#!/usr/bin/env python3
"""Renders the results tables of README.md and docs/*.md from the JSON files beside this script.

    python results/render.py           # rewrites every table between its markers
    python results/render.py --check   # exits 1, naming the page, if a page differs

Every results/*.json file names its table (`"table"`). The README's results table (`main`) is
built from one file per row (cnn.json, mlp.json, ...: command, machine, date, jax version,
parameters, per-seed test accuracies, run and epoch seconds). Every other table comes from one
file holding its page, columns, rows, the command that reproduces it (`command`) and, where it
has since moved, the one that measured it (`measured_with`). A table sits in its page
between `<!-- results:start -->` and `<!-- results:end -->` (the README's) or
`<!-- results:NAME:start -->` and `<!-- results:NAME:end -->`. Standard library only, so the
docs test can import it without jax.
"""

import json
import pathlib
import statistics
import sys

RESULTS = pathlib.Path(__file__).resolve().parent
ROOT = RESULTS.parent
MAIN_PAGE = "README.md"


def load(results_dir: pathlib.Path = RESULTS) -> dict[str, list[dict]]:
    """Every results file, grouped by its table name, each with its file name under `_file`."""
    tables: dict[str, list[dict]] = {}
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        if "table" not in record:
            raise ValueError(f"{path.name} names no table")
        record["_file"] = path.name
        tables.setdefault(record["table"], []).append(record)
    return tables


def markers(name: str) -> tuple[str, str]:
    if name == "main":
        return "<!-- results:start -->", "<!-- results:end -->"
    return f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _main_row(row: dict) -> str:
    seeds = sorted(row["test_accuracy"], key=int)
    accuracies = " / ".join(f"{row['test_accuracy'][s]:.2f}" for s in seeds) + " %"
    if "ensemble_accuracy" in row:
        accuracies = "members " + accuracies
        mean = f"ensemble **{row['ensemble_accuracy']:.2f} %**"
        parameters = f"{row['members']} x {row['parameters']:,}"
    else:
        mean = f"{statistics.fmean(row['test_accuracy'][s] for s in seeds):.2f} %"
        parameters = f"{row['parameters']:,}"
    runs = row["run_seconds"]
    all_runs = [t for s in sorted(runs, key=int) for t in runs[s]]
    whole = _seconds(runs[min(runs, key=int)][0])
    if len(all_runs) > len(runs):
        whole += f" ({len(all_runs)} runs: mean {statistics.fmean(all_runs):.1f} s)"
    epoch = row.get("epoch_seconds")
    if isinstance(epoch, dict):  # Per-seed lists of epoch times: seed 0's median.
        epoch = _seconds(round(statistics.median(epoch[min(epoch, key=int)]), 1))
    elif isinstance(epoch, list):
        epoch = f"{epoch[0]:g}-{epoch[1]:g} s"
    elif epoch is None:
        epoch = "not recorded"
    else:
        epoch = _seconds(epoch)
    cells = [row["model"], f"`{row['command']}`", parameters, accuracies, mean, whole, epoch]
    return "| " + " | ".join(cells) + " |"


def render_main(rows: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: r["order"])
    lines = ["| model | command | parameters | test accuracy, seeds 0 / 1 / 2 | mean | "
             "whole run (seed 0) | one epoch |", "|---|---|---|---|---|---|---|"]
    lines += [_main_row(r) for r in rows]
    lines.append("")
    by_setting: dict[tuple, list[str]] = {}
    for r in rows:
        by_setting.setdefault((r["machine"], r["jax"]), []).append(r)
    for (machine, jax), group in by_setting.items():
        dates: dict[str, list[str]] = {}
        for r in group:
            dates.setdefault(r["date"], []).append(r["short"])
        when = " and ".join(f"{d} ({', '.join(m)})" for d, m in sorted(dates.items()))
        lines.append(f"All 10,000 test images; CPU only: {machine}; jax {jax}; measured {when}.")
    lines.append("")
    lines += [f"- {r['short']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines)


def _cell(value, fmt: str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [median, min, max]
        median, low, high = (_cell(v, fmt) for v in value)
        return f"{median} ({low}-{high})"
    if isinstance(value, int) and fmt is None:
        return f"{value:,}"
    return fmt.format(value) if fmt else f"{value:g}"


def render_table(spec: dict) -> str:
    columns = [c if isinstance(c, dict) else {"name": c} for c in spec["columns"]]
    lines = ["| " + " | ".join(c["name"] for c in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in spec["rows"]:
        if len(row) != len(columns):
            raise ValueError(f"{spec['_file']}: a row has {len(row)} cells for {len(columns)} columns")
        lines.append("| " + " | ".join(_cell(v, c.get("format")) for v, c in zip(row, columns)) + " |")
    where = f"Machine: {spec['machine']}. Date: {spec['date']}" + (
        f"; jax {spec['jax']}." if spec.get("jax") else ".")
    if spec.get("command"):  # The command that reproduces it ("measured_with": the one used then).
        commands = spec["command"] if isinstance(spec["command"], list) else [spec["command"]]
        how = "Reproduce: " + "; ".join(f"`{c}`" for c in commands) + "."
    else:  # In words: how it was measured, where no command in the repository does it.
        how = f"Measured by {spec['method']}."
    lines += ["", f"{how} {where}" + (f" {spec['note']}" if spec.get("note") else "")]
    return "\n".join(lines)


def rendered(results_dir: pathlib.Path = RESULTS) -> dict[str, dict[str, str]]:
    """{page: {table name: rendered text}} for every table of the results files."""
    pages: dict[str, dict[str, str]] = {}
    for name, records in load(results_dir).items():
        if name == "main":
            pages.setdefault(MAIN_PAGE, {})[name] = render_main(records)
        else:
            if len(records) != 1:
                raise ValueError(f"table {name} is in {len(records)} files")
            pages.setdefault(records[0]["page"], {})[name] = render_table(records[0])
    return pages


def replace(text: str, name: str, table: str, page: str = "") -> str:
    """`text` with the part between the table's markers replaced by `table`."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{page}: needs exactly one {start} followed by one {end}")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{table}\n{end}{tail}"


def updated_pages(root: pathlib.Path = ROOT, results_dir: pathlib.Path = RESULTS) -> dict[str, tuple[str, str]]:
    """{page: (current text, text with every table rendered)}."""
    out = {}
    for page, tables in rendered(results_dir).items():
        current = (root / page).read_text()
        new = current
        for name, table in sorted(tables.items()):
            new = replace(new, name, table, page)
        out[page] = (current, new)
    return out


def main(argv: list[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print("usage: python results/render.py [--check]", file=sys.stderr)
        return 2
    try:
        pages = updated_pages()
    except (ValueError, KeyError, OSError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    stale = [page for page, (current, new) in pages.items() if current != new]
    if check:
        for page in stale:
            print(f"{page}: its results table differs from results/*.json "
                  "(run python results/render.py)", file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        (ROOT / page).write_text(pages[page][1])
        print(f"rewrote the tables of {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
