"""The evaluation report of a trained run: every example of a split scored, and where it errs.

    python -m jaxdigits.evaluate --workdir=runs/mlp        # writes runs/mlp/report/

`make_report` runs the model once over every image, then derives everything from the logits with
numpy: accuracy and loss; the confusion matrix; per-class precision, recall and F1 with macro and
weighted averages; for every class d, which true classes are most often predicted as d; and the k
examples of each class given the lowest probability of their true label. It writes `report.json`
(all of it), `confusion_matrix.json` and four PNGs (see `FILES`).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxdigits import checkpoint, plots, runs, scoring
from jaxdigits.inputs import to_device
from jaxdigits.step import Setup
from jaxdigits.errors import UserError
from jaxdigits.metrics import read_jsonl, write_atomic

FILES = {
    "report": "report.json",
    "confusion_json": "confusion_matrix.json",
    "confusion_png": "confusion_matrix.png",
    "worst_png": "worst_examples.png",
    "samples_png": "samples.png",
    "curves_png": "training_curves.png",
}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [classes, classes]: entry [t, p] counts examples of true class t predicted as p."""
    flat = labels.astype(np.int64) * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support [classes] from a confusion matrix.

    A class never predicted has precision 0, one never present recall 0, and F1 is 0 when both
    are 0 (scikit-learn's `zero_division=0`).
    """
    hits = np.diag(confusion).astype(np.float64)  # [classes]
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support,
            "predicted": predicted}


def averages(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Macro (plain mean over classes) and weighted (by support) precision, recall and F1."""
    weights = scores["support"] / max(scores["support"].sum(), 1)
    keys = ("precision", "recall", "f1")
    return {"macro_avg": {k: float(scores[k].mean()) for k in keys},
            "weighted_avg": {k: float((weights * scores[k]).sum()) for k in keys}}


def mistaken_for(confusion: np.ndarray) -> list[list[tuple[int, int]]]:
    """For each predicted class d, [(true class, count)] of the errors predicted as d, most first."""
    table = []
    for d in range(len(confusion)):
        sources = [(t, int(confusion[t, d])) for t in range(len(confusion)) if t != d and confusion[t, d]]
        table.append(sorted(sources, key=lambda tc: (-tc[1], tc[0])))
    return table


def worst_examples(true_probability: np.ndarray, labels: np.ndarray, num_classes: int,
                   k: int) -> list[np.ndarray]:
    """For each class, the indices of its k examples with the lowest probability of that class."""
    order = np.argsort(true_probability, kind="stable")  # Ties: lower index first.
    return [order[labels[order] == c][:k] for c in range(num_classes)]


def summarise(logits: np.ndarray, labels: np.ndarray, class_names, k: int) -> dict:
    """The report's numbers (JSON-ready) from logits [N, classes] and int labels [N]."""
    num_classes = len(class_names)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)), np.float64)  # [N, classes]
    predictions = logits.argmax(axis=-1)  # [N]
    true_log_prob = log_probs[np.arange(len(labels)), labels]  # [N]
    confusion = confusion_matrix(labels, predictions, num_classes)
    scores = class_scores(confusion)
    probs = np.exp(log_probs)
    worst = worst_examples(np.exp(true_log_prob), labels, num_classes, k)
    pairs = sorted(((int(confusion[t, p]), t, p) for t in range(num_classes)
                    for p in range(num_classes) if t != p and confusion[t, p]), key=lambda x: (-x[0], x[1], x[2]))
    name = lambda i: class_names[int(i)]
    overall = scoring.metrics_of(logits, labels)
    return {
        "count": overall["count"],
        "accuracy": overall["accuracy"],
        "loss": overall["loss"],
        "errors": int((predictions != labels).sum()),
        "classes": list(class_names),
        "per_class": [{"class": name(c), "precision": float(scores["precision"][c]),
                       "recall": float(scores["recall"][c]), "f1": float(scores["f1"][c]),
                       "support": int(scores["support"][c]), "predicted": int(scores["predicted"][c])}
                      for c in range(num_classes)],
        **averages(scores),
        "confusion_matrix": {"rows": "true class", "columns": "predicted class",
                             "classes": list(class_names), "counts": confusion.tolist()},
        "mistaken_for": [{"predicted": name(d), "wrong": sum(n for _, n in sources),
                          "true_classes": [{"true": name(t), "count": n,
                                            "share_of_true_class": n / max(int(scores["support"][t]), 1)}
                                           for t, n in sources]}
                         for d, sources in enumerate(mistaken_for(confusion))],
        "most_confused_pairs": [{"true": name(t), "predicted": name(p), "count": n}
                                for n, t, p in pairs[:10]],
        "worst": [{"class": name(c), "examples": [
            {"index": int(i), "predicted": name(predictions[i]),
             "probability_true": float(probs[i, c]), "probability_predicted": float(probs[i, predictions[i]])}
            for i in idx]} for c, idx in enumerate(worst)],
    }


def class_index(value: str, class_names) -> int:
    """A class given by name ("7", "Sneaker") or by index ("7")."""
    if value in class_names:
        return list(class_names).index(value)
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    raise UserError(f"unknown class {value!r}; choose one of {', '.join(class_names)} (or an index).")


def run_history(meta: dict) -> list[dict]:
    """The per-epoch records of the run: its metrics.jsonl when the run folder holds one (all its
    epochs), else the history stored in the checkpoint (epochs up to the checkpoint's)."""
    jsonl = pathlib.Path(meta["checkpoint"]).parent.parent / "metrics.jsonl"
    try:
        records = [r for r in read_jsonl(jsonl) if "train_loss" in r]
    except (OSError, json.JSONDecodeError):  # Unreadable: the checkpoint's own copy will do.
        records = []
    return records or [r for r in meta.get("history", []) if "train_loss" in r]


MAX_WORST_K, MAX_SAMPLES = 20, 200  # Figures that still fit a screen; report.json lists the same.


def check_options(worst_k: int, num_samples: int) -> None:
    """--worst_k and --num_samples within what a figure can show (checked before any work)."""
    if not (1 <= worst_k <= MAX_WORST_K and 1 <= num_samples <= MAX_SAMPLES):
        raise UserError(f"--worst_k must be in [1, {MAX_WORST_K}] and --num_samples in "
                        f"[1, {MAX_SAMPLES}], got {worst_k} and {num_samples}.")


def scored_label(meta: dict) -> str:
    """Which parameters were scored, in the words `train` uses too: "best checkpoint, epoch 4 of
    5, chosen by validation accuracy", "latest checkpoint, epoch 5 of 5", or "checkpoint PATH,
    epoch 3 of 5" for an older one. `meta` is `runs.load_run`'s (its "checkpoint" the folder read)."""
    folder = pathlib.Path(meta["checkpoint"])
    config = meta["config"]
    of = f"epoch {meta['epoch']} of {config['epochs']}"
    if folder.parent.name == "best":
        return f"best checkpoint, {of}, chosen by {runs.best_by(config.get('validation_size'))}"
    if folder.parent.name == "checkpoints" and checkpoint.saved_epochs(folder.parent)[-1:] == [meta["epoch"]]:
        return f"latest checkpoint, {of}"
    return f"checkpoint {folder}, {of}"


def make_report(setup: Setup, params, meta: dict, images: np.ndarray, labels: np.ndarray, *,
                split: str, out_dir, worst_k: int = 6, sample_class: str | None = None,
                num_samples: int = 40) -> dict:
    """Scores every example of `split` (uint8 images [N, H, W, C], labels [N]) and writes the
    report's files into `out_dir`; returns the report (what report.json holds)."""
    check_options(worst_k, num_samples)
    names = list(meta["class_names"])
    shown = None if sample_class is None else class_index(sample_class, names)
    logits = scoring.predict(setup, params, to_device(images, labels))  # [N, classes]
    numbers = summarise(logits, labels, names, worst_k)
    config = setup.config
    run = {"checkpoint": meta["checkpoint"], "epoch": meta["epoch"], "epochs": config.epochs,
           "scored": scored_label(meta), "model": config.model, "dataset": meta["dataset"],
           "optimizer": config.optimizer, "config": meta["config"]}
    out_dir = pathlib.Path(out_dir)
    report = {"split": split, **numbers, "run": run, "history": run_history(meta),
              "files": {k: str(out_dir / v) for k, v in FILES.items()}}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_files(report, images, labels, logits, shown, worst_k, num_samples)
    except OSError as e:
        raise UserError(f"cannot write the report into {out_dir} ({e.strerror or e}).") from None
    return report


def _write_files(report: dict, images, labels, logits, shown, worst_k: int, num_samples: int):
    """The report's figures and JSON files, each written atomically (paths in report["files"])."""
    run, names, files = report["run"], report["classes"], report["files"]
    split = report["split"]
    what = f"{run['model']} on {run['dataset']} (epoch {run['epoch']}), {split} set"
    plots.save(plots.confusion_heatmap(
        np.asarray(report["confusion_matrix"]["counts"]), names,
        f"Confusion matrix: {what}\naccuracy {100 * report['accuracy']:.2f}% on all "
        f"{report['count']} images"), files["confusion_png"])
    plots.save(_worst_figure(images, report["worst"], names,
                             f"Worst {split} images: the {worst_k} of each true class given the "
                             f"lowest probability of it\n{what}"), files["worst_png"])
    pool = np.arange(len(labels)) if shown is None else np.flatnonzero(labels == shown)
    of_class = "" if shown is None else f" of class {names[shown]}"
    plots.save(_samples_figure(images, labels, logits.argmax(-1), pool[:num_samples], names,
                               f"The first {len(pool[:num_samples])} {split} images{of_class} "
                               "(green: predicted right, red: wrong)"), files["samples_png"])
    marker = {"epoch": run["epoch"], "loss": report["loss"], "accuracy": report["accuracy"],
              "label": f"{split}, this report"}
    plots.save(plots.training_curves(report["history"], f"Training curves: {run['model']} on "
                                     f"{run['dataset']}", marker), files["curves_png"])
    write_atomic(files["confusion_json"], json.dumps(report["confusion_matrix"], indent=1) + "\n")
    write_atomic(files["report"], json.dumps(report, indent=1) + "\n")


def _worst_figure(images, worst: list[dict], names, title: str):
    """One row per class of its worst examples; short rows are padded with empty slots."""
    k = max((len(entry["examples"]) for entry in worst), default=0) or 1
    slots, captions, colours = [], [], []
    for entry in worst:
        true = entry["class"]
        for example in entry["examples"]:
            slots.append(example["index"])
            captions.append(f"{_pair('true', true, 'pred', example['predicted'], names)}\n"
                            f"P({true}) = {_probability(example['probability_true'])}")
            colours.append(plots.RIGHT if example["predicted"] == true else plots.WRONG)
        missing = k - len(entry["examples"])
        slots, captions, colours = slots + [0] * missing, captions + [None] * missing, colours + [None] * missing
    return plots.image_grid(images[slots], captions, colours, title, k, row_labels=names)


def _samples_figure(images, labels, predictions, chosen: np.ndarray, names, title: str):
    captions = [_pair("label", names[labels[i]], "pred", names[predictions[i]], names) for i in chosen]
    colours = [plots.RIGHT if labels[i] == predictions[i] else plots.WRONG for i in chosen]
    return plots.image_grid(images[chosen], captions, colours, title, min(10, max(len(chosen), 1)))


def _pair(key1: str, value1: str, key2: str, value2: str, names) -> str:
    """"true 4, pred 9" on one line; with long class names ("T-shirt/top"), on two."""
    return f"{key1} {value1}{', ' if max(map(len, names)) <= 4 else chr(10)}{key2} {value2}"


def _probability(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def brief(report: dict) -> dict:
    """The headline of a report, JSON-ready: what `evaluate --json` prints."""
    run = report["run"]
    return {"split": report["split"], "accuracy": report["accuracy"], "loss": report["loss"],
            "count": report["count"], "errors": report["errors"], "scored": run["scored"],
            "checkpoint": run["checkpoint"], "epoch": run["epoch"], "epochs": run["epochs"],
            "model": run["model"], "dataset": run["dataset"],
            "report_dir": str(pathlib.Path(report["files"]["report"]).parent)}


def format_summary(report: dict, top: int = 3) -> str:
    """The per-class table, the classes most mistaken for each, then a few labelled lines: the
    score and which parameters gave it (the words `train` uses), loss, images, the report."""
    run, split = report["run"], report["split"]
    lines = [f"{run['model']} on {run['dataset']}, every {split} image:",
             f"{'class':>12} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>7}   most often mistaken for it"]
    for row, mistaken in zip(report["per_class"], report["mistaken_for"]):
        sources = ", ".join(f"{m['true']} ({m['count']})" for m in mistaken["true_classes"][:top])
        lines.append(f"{row['class']:>12} {100 * row['precision']:8.2f}% {100 * row['recall']:6.2f}% "
                     f"{100 * row['f1']:6.2f}% {row['support']:7d}   {sources or '-'}")
    for key, label in [("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")]:
        a = report[key]
        lines.append(f"{label:>12} {100 * a['precision']:8.2f}% {100 * a['recall']:6.2f}% {100 * a['f1']:6.2f}%")
    pairs = ", ".join(f"{p['true']} as {p['predicted']} ({p['count']})" for p in report["most_confused_pairs"][:5])
    lines.append(f"most frequent confusions (true as predicted): {pairs or 'none'}")
    files = [pathlib.Path(f) for f in report["files"].values()]
    lines += ["",
              f"{split} accuracy {100 * report['accuracy']:.2f} % ({run['scored']})",
              f"  checkpoint  {run['checkpoint']}",
              f"  loss        {report['loss']:.4f}",
              f"  images      {report['count']} scored, {report['errors']} wrong",
              f"  report      {files[0].parent}/ ({', '.join(f.name for f in files)})"]
    return "\n".join(lines)
