"""The table and plot of a many-model run: final validation and test accuracy per member.

Written by `many.train_many` as sweep.md (Markdown), sweep.csv and sweep.png (matplotlib, no
display needed). With one swept hyperparameter the plot's x-axis is its value (logarithmic
when the values span a factor of 10 or more); otherwise members are shown in order.
"""

import csv
import io
import math
import pathlib

from matplotlib.figure import Figure

from jaxdigits import plots
from jaxdigits.metrics import write_atomic


def rows(result: dict, swept: tuple) -> list[dict]:
    keys = ("member", *swept, "seed", "val_accuracy", "test_accuracy", "test_loss",
            "diverged_in_epoch")
    return [{k: m.get(k) for k in keys} for m in result["members"]]


def markdown(result: dict, swept: tuple) -> str:
    table = rows(result, swept)
    header = list(table[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        lines.append("| " + " | ".join(_cell(k, v) for k, v in row.items()) + " |")
    e = result["ensemble"]
    members = e.get("members", len(table))
    which = f"all {members}" if members == len(table) else f"the {members} that did not diverge"
    lines.append(f"\nEnsemble of {which} members (mean of probabilities): test accuracy "
                 f"{100 * e['test_accuracy']:.2f} % on {e['test_count']} images, loss "
                 f"{e['test_loss']:.4f}.\n")
    return "\n".join(lines)


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("accuracy"):
        return f"{100 * value:.2f} %"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write(workdir, result: dict, swept: tuple) -> None:
    workdir = pathlib.Path(workdir)
    write_atomic(workdir / "sweep.md", markdown(result, swept))
    buffer = io.StringIO()
    table = rows(result, swept)
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_atomic(workdir / "sweep.csv", buffer.getvalue())
    plot(workdir / "sweep.png", table, swept)


def plot(path: pathlib.Path, table: list[dict], swept: tuple) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if len(swept) == 1:
        x = [row[swept[0]] for row in table]
        ax.set_xlabel(swept[0])
        if min(x) > 0 and max(x) / min(x) >= 10:
            ax.set_xscale("log")
    else:
        x = list(range(len(table)))
        ax.set_xticks(x, [_label(row, swept) for row in table], rotation=45, ha="right",
                      fontsize=7)
    for key, marker in [("val_accuracy", "o"), ("test_accuracy", "s")]:
        y = [100 * row[key] if row[key] is not None and math.isfinite(row[key]) else math.nan
             for row in table]
        ax.plot(x, y, marker, label=key.replace("_", " "))
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plots.save(fig, path, dpi=120)


def _label(row: dict, swept: tuple) -> str:
    return ", ".join(f"{k}={row[k]:g}" for k in swept) + (", " if swept else "") + f"seed {row['seed']}"
