"""Evaluate a trained run on the whole test set (every image, no truncated batch).

    python -m jaxdigits.evaluate --workdir=runs/mnist-cnn-20261122-010000
    python -m jaxdigits.evaluate --checkpoint=runs/.../best/4 --split=validation
"""

import json
import pathlib

import jax

from jaxdigits import checkpoint, train
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
    if not pathlib.Path(path).exists():
        raise UserError(f"{path} does not exist.")
    result = evaluate_run(path, which=FLAGS.which, split=FLAGS.split, data_dir=FLAGS.data_dir)
    print(f"{result['model']} on {result['dataset']} (epoch {result['epoch']}), {result['split']}: "
          f"accuracy {100 * result['accuracy']:.2f}% on all {result['count']} images, "
          f"loss {result['loss']:.4f}")
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
