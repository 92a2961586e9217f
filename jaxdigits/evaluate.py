"""Evaluate a trained run on the whole test set (every image, no truncated batch).

    python -m jaxdigits.evaluate --workdir=runs/mnist-cnn-20261122-010000
    python -m jaxdigits.evaluate --checkpoint=runs/.../best/4 --split=validation
    python -m jaxdigits.evaluate --workdir=runs/mlp-x4          # a --num_models run: members, ensemble
    python -m jaxdigits.evaluate --workdir=runs/a,runs/b,runs/c  # the ensemble of separate runs
"""

import json
import pathlib

import jax

from jaxdigits import checkpoint, ensemble, many, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError


def load_run(path, which: str = "best"):
    """(setup, params, meta) for a run's workdir (its `which` checkpoint) or a checkpoint folder."""
    folder, epoch = checkpoint.find(path, which)
    meta = checkpoint.read_meta(folder, epoch)
    config = Config.from_dict(meta["config"])
    norm = meta["normalisation"]
    num_train = meta["steps_per_epoch"] * config.batch_size
    setup = train.make_setup(config, num_train, tuple(meta["image_shape"]), len(meta["class_names"]),
                             norm["mean"], norm["std"])
    target = train.init_state(setup, jax.random.key(0))
    state, meta = checkpoint.restore(folder, epoch, target)
    return setup, state.params, meta


def evaluate_run(path, *, which: str = "best", split: str = "test", data_dir=None) -> dict:
    """Loss and accuracy of a saved run over every example of `split` (test or validation)."""
    setup, params, meta = load_run(path, which)
    _, _, val, test = train.prepare_data(setup.config, data_dir)
    images, labels = {"test": test, "validation": val}[split]
    if not len(labels):
        raise UserError(f"the run at {path} has no {split} examples (--validation_size=0).")
    result = train.make_evaluator(setup)(params, train.to_device(images, labels))
    return {"split": split, "epoch": meta["epoch"], "model": setup.config.model,
            "dataset": meta["dataset"], **result}


def main(argv):
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    path = FLAGS.checkpoint or FLAGS.workdir
    if not path:
        raise UserError("pass --workdir=RUN_FOLDER or --checkpoint=CHECKPOINT_FOLDER.")
    for p in path.split(","):
        if not pathlib.Path(p).exists():
            raise UserError(f"{p} does not exist.")
    paths = many.member_paths(path) if "," not in path else path.split(",")
    if paths:
        return print_ensemble(ensemble.evaluate_ensemble(paths, which=FLAGS.which,
                                                         split=FLAGS.split, data_dir=FLAGS.data_dir))
    result = evaluate_run(path, which=FLAGS.which, split=FLAGS.split, data_dir=FLAGS.data_dir)
    print(f"{result['model']} on {result['dataset']} (epoch {result['epoch']}), {result['split']}: "
          f"accuracy {100 * result['accuracy']:.2f}% on all {result['count']} images, "
          f"loss {result['loss']:.4f}")
    print(json.dumps(result))


def print_ensemble(result: dict) -> None:
    for m in result["members"]:
        print(f"{m['path']}: {m['model']} seed {m['seed']} (epoch {m['epoch']}), {result['split']}: "
              f"accuracy {100 * m['accuracy']:.2f}%, loss {m['loss']:.4f}")
    if "ensemble" in result:
        e = result["ensemble"]
        print(f"ensemble of {e['members']} (mean probability), {result['split']}: accuracy "
              f"{100 * e['accuracy']:.2f}% on all {e['count']} images, loss {e['loss']:.4f}")
    else:
        print(f"no ensemble: the members do not share one {result['split']} split.")
    print(json.dumps(result))


if __name__ == "__main__":
    from absl import app, flags

    from jaxdigits.errors import report_user_errors

    flags.DEFINE_string("workdir", None, "A run folder written by jaxdigits.train.")
    flags.DEFINE_string("checkpoint", None, "A checkpoint folder (e.g. RUN/best/5) instead of --workdir.")
    flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint of --workdir.")
    flags.DEFINE_enum("split", "test", ["test", "validation"], "Which split to score.")
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files.")
    app.run(report_user_errors(main))
