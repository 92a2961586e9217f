"""The report's figures: confusion heatmap, image grids and training curves, as PNG files.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot, so nothing here
needs a display or touches global state (matplotlib renders them with its Agg backend), and each
PNG is written atomically. Every figure has a title, axis labels and, where it plots lines, a
legend.
"""

import io
import math

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jaxdigits.metrics import write_atomic

RIGHT, WRONG = "#1a7f37", "#c62828"  # Caption colours: correct and wrong predictions.


def save(fig: Figure, path, dpi: int = 100) -> None:
    """Writes `fig` as a PNG to `path`, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


def confusion_heatmap(confusion: np.ndarray, class_names, title: str) -> Figure:
    """Rows are true classes, columns predictions; each cell shows its count and row percentage.

    The colour is the row percentage on a power scale (gamma 0.3), so that a 1 % confusion is
    visible next to a 99 % diagonal.
    """
    c = len(class_names)
    support = confusion.sum(axis=1, keepdims=True)  # [c, 1]
    percent = 100 * confusion / np.maximum(support, 1)  # [c, c]
    size = max(6.0, 0.75 * c + 2)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(percent, cmap="Blues", norm=PowerNorm(0.3, vmin=0, vmax=100))
    if c <= 20:  # Beyond that the numbers would not fit in the cells.
        for i in range(c):
            for j in range(c):
                dark = percent[i, j] > 25
                ax.text(j, i, f"{confusion[i, j]}\n{percent[i, j]:.1f}%", ha="center", va="center",
                        fontsize=8 if c <= 10 else 6, color="white" if dark else "black")
    ax.set_xticks(range(c), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(c), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class (%)", fraction=0.046, pad=0.04)
    return fig


def _show(ax, image: np.ndarray) -> None:
    """One uint8 image [H, W, C]: greyscale with dark ink on white, or colour."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray_r", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: np.ndarray, captions, colours, title: str, columns: int,
               row_labels=None) -> Figure:
    """uint8 images [n, H, W, C] in rows of `columns`, each with its caption (in its colour) below.

    With `row_labels`, `images` holds `len(row_labels) * columns` slots row by row, and a slot
    whose caption is None stays empty (a class with fewer examples than columns).
    """
    rows = len(row_labels) if row_labels is not None else max(1, math.ceil(len(images) / columns))
    lines = max((c.count("\n") + 1 for c in captions if c), default=1)
    chars = max((len(line) for c in captions if c for line in c.split("\n")), default=0)
    width = max(1.45, 0.075 * chars)  # Inches per column: long captions must not overlap.
    label_width = 0.1 * max((len(label) for label in row_labels), default=0) if row_labels else 0
    fig = Figure(figsize=(width * columns + label_width, (1.25 + 0.16 * lines) * rows + 0.8),
                 layout="constrained")  # Leaves room for the two-line title, unlike tight_layout.
    axes = np.atleast_2d(fig.subplots(rows, columns, squeeze=False))
    for slot, ax in enumerate(axes.flat):
        if slot >= len(images) or captions[slot] is None:
            ax.axis("off")
            continue
        _show(ax, images[slot])
        ax.set_xlabel(captions[slot], fontsize=8, color=colours[slot], labelpad=2)
    if row_labels is not None:
        for label, ax in zip(row_labels, axes[:, 0]):
            ax.axis("on")
            ax.set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center", labelpad=8)
    fig.suptitle(title, fontsize=12)
    return fig


def training_curves(history: list[dict], title: str, marker: dict | None = None) -> Figure:
    """Loss and accuracy per epoch, train and validation, side by side.

    `marker` ({"epoch", "loss", "accuracy", "label"}) adds the report's own score as one point,
    e.g. the test accuracy of the evaluated checkpoint.
    """
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for ax, metric, label in [(axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy (%)")]:
        scale = 100 if metric == "accuracy" else 1
        for prefix, name, style in [("train", "train", "-o"), ("val", "validation", "-s")]:
            points = [(e, scale * r[f"{prefix}_{metric}"])
                      for e, r in zip(epochs, history) if f"{prefix}_{metric}" in r]
            if points:
                ax.plot(*zip(*points), style, label=name, markersize=4)
        if marker is not None:
            ax.plot([marker["epoch"]], [scale * marker[metric]], "*", markersize=14,
                    color="#d62728", label=marker["label"])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{metric} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_yscale("log")  # Late epochs differ by small amounts; a log scale shows them.
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig
