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

from jaxdigits import checkpoint, contract, models, optimizers
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError, check_writable_folder
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
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a valid jaxdigits config ({e}).") from None


def check_workdir(workdir: pathlib.Path, config: Config) -> bool:
    """True if `workdir` holds this run already; raises if it holds something else or cannot be
    written. A run that saved no checkpoint yet (it diverged, or was stopped, in its first epoch)
    gives way to a new config."""
    saved = read_config(workdir)
    if saved == config:
        return True  # Its files are rewritten only where they differ: a read-only copy re-scores.
    check_writable_folder(workdir, "--workdir")
    if saved is not None:
        if not holds_checkpoints(workdir):
            log(f"{workdir} holds a run that saved no checkpoint; starting it again with this config.")
            return False
        diff = [f"{k}={getattr(config, k)!r} (saved: {getattr(saved, k)!r})"
                for k in Config.__dataclass_fields__ if getattr(saved, k) != getattr(config, k)]
        raise UserError(f"{workdir} holds a run with a different config: {', '.join(diff)}; "
                        "pass a new --workdir, or drop those flags to continue that run.")
    if workdir.exists() and any(workdir.iterdir()):
        raise UserError(f"{workdir} exists and is not a jaxdigits run (no config.json); pass an "
                        "empty or new --workdir.")
    return False


def holds_checkpoints(workdir: pathlib.Path) -> bool:
    """Whether `workdir` (or any member folder in it) has a saved epoch or results."""
    folders = [workdir, *sorted(workdir.glob("member_*"))]
    return any(checkpoint.saved_epochs(f / sub) or (f / "results.json").exists()
               for f in folders for sub in ("checkpoints", "best"))


def check_run(workdir: pathlib.Path, config: Config, keep_checkpoints: int) -> bool:
    """`check_workdir` of a run about to start, with its config and --keep_checkpoints checked."""
    if keep_checkpoints < 1:
        raise UserError(f"--keep_checkpoints must be at least 1, got {keep_checkpoints}.")
    try:
        str(workdir).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"--workdir {str(workdir)!r} is not valid UTF-8; name the run folder in "
                        "UTF-8 (checkpoints store their paths as text).") from None
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


def verify_optimizer(setup: Setup) -> None:
    """Tries the optimizer on the model's parameter shapes (no FLOPs) before anything is written:
    a plug-in whose init or update fails, or whose state changes shape, is one sentence. The
    shipped optimizers keep it (tested), so their runs skip the trace (0.4 s of the speedrun)."""
    if optimizers.is_shipped(setup.config.optimizer):
        return
    params = jax.eval_shape(lambda key: setup.model.init(key, setup.image_shape), jax.random.key(0))
    contract.verify(setup.tx, models.split(params)[0], setup.config.optimizer)


def best_by(held_out) -> str:
    """What `best/` is chosen by (`score`): validation accuracy where `held_out` (a count of
    validation images, or whether a record has their accuracy), otherwise training loss."""
    return "validation accuracy" if held_out else "training loss"


def scored_label(history: list[dict], epochs: int) -> str:
    """Which parameters `train` scored, in `evaluate`'s words (`report.scored_label`), and how
    they relate to the best checkpoint that `evaluate` and `export` score by default."""
    last = history[-1]["epoch"]
    by = best_by("val_accuracy" in history[-1])
    best = checkpoint.best_epoch(history, score)
    if best == last:
        return f"latest checkpoint, epoch {last} of {epochs}, also the best by {by}"
    return (f"latest checkpoint, epoch {last} of {epochs}; evaluate and export score the best "
            f"checkpoint, epoch {best} of {epochs}, chosen by {by}, unless given --which=latest")


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
