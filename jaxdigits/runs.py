"""Run folders: the workdir checks, what a run records per epoch and per checkpoint, and loading
a saved run back for scoring.

A run folder holds config.json, metrics.jsonl, results.json, tensorboard/, checkpoints/ (the last
few epochs) and best/ (the best validation accuracy). Each checkpoint carries `run_meta`: the
config, the epoch, the history and the input normalisation, enough to evaluate, export or resume.
"""

import datetime
import json
import math
import pathlib

import jax

from jaxdigits import checkpoint
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError
from jaxdigits.step import Setup, make_config_model


def log(message: str) -> None:
    """Prints `message` on process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def read_config(workdir) -> Config | None:
    """The config saved in `workdir`, or None if it has none."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        return None
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a valid jaxdigits config ({e}).") from None


def check_workdir(workdir: pathlib.Path, config: Config) -> bool:
    """True if `workdir` holds this run already; raises if it holds something else."""
    saved = read_config(workdir)
    if saved is not None:
        if saved != config:
            diff = [f"{k}={getattr(config, k)!r} (saved: {getattr(saved, k)!r})"
                    for k in Config.__dataclass_fields__ if getattr(saved, k) != getattr(config, k)]
            raise UserError(f"{workdir} holds a run with a different config: {', '.join(diff)}; "
                            "pass a new --workdir, or drop those flags to continue that run.")
        return True
    if workdir.exists() and any(workdir.iterdir()):
        raise UserError(f"{workdir} exists and is not a jaxdigits run (no config.json); pass an "
                        "empty or new --workdir.")
    return False


def check_run(workdir: pathlib.Path, config: Config, keep_checkpoints: int) -> bool:
    """`check_workdir` of a run about to start, with its config and --keep_checkpoints checked."""
    if keep_checkpoints < 1:
        raise UserError(f"--keep_checkpoints must be at least 1, got {keep_checkpoints}.")
    return check_workdir(workdir, validate(config))


def default_workdir(config: Config) -> pathlib.Path:
    """A new folder under runs/, never one that exists (two runs started in the same second)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = pathlib.Path("runs") / f"{config.dataset.replace(':', '_')}-{config.model}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def score(record: dict) -> float:
    """What "best" means: validation accuracy, or without a validation set, the lowest train loss."""
    return record.get("val_accuracy", -record["train_loss"])


def best_score(history: list[dict]) -> float:
    return max(map(score, history), default=-math.inf)


def epoch_record(epoch: int, step: int, learning_rate: float, train: dict, val: dict | None,
                 seconds: float) -> dict:
    """One line of metrics.jsonl: the epoch's training means, validation scores and speed."""
    record = {"epoch": epoch, "step": step, "learning_rate": learning_rate,
              "train_loss": train["loss"], "train_accuracy": train["accuracy"]}
    if val is not None:
        record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
    record.update(seconds=seconds, images_per_second=train["count"] / seconds)
    return record


def final_record(epochs: int, step: int, test: dict) -> dict:
    """The last line of metrics.jsonl and the content of results.json."""
    return {"epoch": epochs, "step": step, "test_loss": test["loss"],
            "test_accuracy": test["accuracy"], "test_count": test["count"]}


def run_meta(config: Config, epoch: int, history: list, setup: Setup, ds, mean, std) -> dict:
    """What every checkpoint stores beside the state, so a checkpoint alone describes its run."""
    return {"epoch": epoch, "history": history, "config": json.loads(config.to_json()),
            "normalisation": {"mean": mean, "std": std}, "class_names": ds.class_names,
            "dataset": ds.name, "image_shape": list(setup.image_shape),
            "steps_per_epoch": setup.steps_per_epoch}


def format_record(record: dict) -> str:
    parts = [f"epoch {record['epoch']}"]
    for key, label in [("train_loss", "train loss"), ("train_accuracy", "acc"),
                       ("val_loss", "val loss"), ("val_accuracy", "acc")]:
        if key in record:
            value = record[key]
            parts.append(f"{label} {100 * value:.2f}%" if "accuracy" in key else f"{label} {value:.4f}")
    parts.append(f"{record['seconds']:.1f}s, {record['images_per_second']:,.0f} img/s")
    return " | ".join(parts)


def load_run(path, which: str = "best"):
    """(setup, params, meta) for a run's workdir (its `which` checkpoint) or a checkpoint folder.

    Only the parameters are restored and no optimizer is built (`setup.tx` is None): scoring
    needs the model alone, so a run trained with any optimizer loads, a plug-in one included.
    `meta["checkpoint"]` is the checkpoint folder that was read.
    """
    folder, epoch = checkpoint.find(path, which)
    meta = checkpoint.read_meta(folder, epoch)
    config = Config.from_dict(meta["config"])
    model = make_config_model(config, len(meta["class_names"]), gradients=False)
    norm = meta["normalisation"]
    setup = Setup(config, model, None, tuple(meta["image_shape"]), meta["steps_per_epoch"],
                  norm["mean"], norm["std"])
    # Only the structure, shapes and dtypes are needed: no initialisation is compiled or run.
    target = jax.eval_shape(lambda key: model.init(key, setup.image_shape), jax.random.key(0))
    params, meta = checkpoint.restore_params(folder, epoch, target)
    params = jax.device_put(params)  # Restored from shapes alone, orbax gives numpy arrays.
    return setup, params, {**meta, "checkpoint": str(folder / str(epoch))}
