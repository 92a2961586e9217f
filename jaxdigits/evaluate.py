"""Evaluate a trained run on the whole test set (every image, no truncated batch) and report.

    python -m jaxdigits.evaluate --workdir=runs/mnist-cnn-20261122-010000   # report in RUN/report/
    python -m jaxdigits.evaluate --checkpoint=runs/.../best/4 --split=validation
    python -m jaxdigits.evaluate --workdir=runs/mlp-x4          # a --num_models run: members, ensemble
    python -m jaxdigits.evaluate --workdir=runs/a,runs/b,runs/c  # the ensemble of separate runs

The report of one run (metrics, confusion matrix, worst examples, samples, training curves; see
`jaxdigits.report`) goes to `--report_dir`, by default `RUN/report/` (`RUN/report-validation/`
for the validation split). Several runs get each member's score and the ensemble's.
"""

import json
import pathlib

import jax

from jaxdigits import checkpoint, ensemble, many, report, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError


def load_run(path, which: str = "best"):
    """(setup, params, meta) for a run's workdir (its `which` checkpoint) or a checkpoint folder.

    Only the parameters are restored and no optimizer is built (`setup.tx` is None): evaluating
    needs the model alone, so a run trained with any optimizer loads, a plug-in one included.
    `meta["checkpoint"]` is the checkpoint folder that was read.
    """
    folder, epoch = checkpoint.find(path, which)
    meta = checkpoint.read_meta(folder, epoch)
    config = Config.from_dict(meta["config"])
    model = train.make_config_model(config, len(meta["class_names"]), gradients=False)
    norm = meta["normalisation"]
    setup = train.Setup(config, model, None, tuple(meta["image_shape"]), meta["steps_per_epoch"],
                        norm["mean"], norm["std"])
    # Only the structure, shapes and dtypes are needed: no initialisation is compiled or run.
    target = jax.eval_shape(lambda key: model.init(key, setup.image_shape), jax.random.key(0))
    params, meta = checkpoint.restore_params(folder, epoch, target)
    params = jax.device_put(params)  # Restored from shapes alone, orbax gives numpy arrays.
    return setup, params, {**meta, "checkpoint": str(folder / str(epoch))}


def split_data(path, config: Config, split: str, data_dir=None):
    """(uint8 images, labels) of the run's `split`: test, or the validation set its seed carved."""
    _, _, val, test = train.prepare_data(config, data_dir)
    images, labels = {"test": test, "validation": val}[split]
    if not len(labels):
        raise UserError(f"the run at {path} has no {split} examples (--validation_size=0).")
    return images, labels


def evaluate_run(path, *, which: str = "best", split: str = "test", data_dir=None) -> dict:
    """Loss and accuracy of a saved run over every example of `split` (test or validation)."""
    setup, params, meta = load_run(path, which)
    images, labels = split_data(path, setup.config, split, data_dir)
    result = train.make_evaluator(setup)(params, train.to_device(images, labels))
    return {"split": split, "epoch": meta["epoch"], "model": setup.config.model,
            "dataset": meta["dataset"], **result}


def report_run(path, *, which: str = "best", split: str = "test", data_dir=None, report_dir=None,
               **options) -> dict:
    """The full report of a saved run (`report.make_report`, `options` go there), written to
    `report_dir` (default: RUN/report/, or RUN/report-validation/)."""
    setup, params, meta = load_run(path, which)
    images, labels = split_data(path, setup.config, split, data_dir)
    run_dir = pathlib.Path(meta["checkpoint"]).parent.parent
    report_dir = report_dir or run_dir / ("report" if split == "test" else f"report-{split}")
    return report.make_report(setup, params, meta, images, labels, split=split, out_dir=report_dir,
                              **options)


def main(argv):
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only manager is read-only.
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
    result = report_run(path, which=FLAGS.which, split=FLAGS.split, data_dir=FLAGS.data_dir,
                        report_dir=FLAGS.report_dir, worst_k=FLAGS.worst_k,
                        sample_class=FLAGS.sample_class, num_samples=FLAGS.num_samples)
    print(report.format_summary(result))
    print(json.dumps({"split": result["split"], "epoch": result["run"]["epoch"],
                      "model": result["run"]["model"], "dataset": result["run"]["dataset"],
                      **{k: result[k] for k in ("loss", "accuracy", "count")}}))


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
    flags.DEFINE_string("report_dir", None, "Where the report goes (default: RUN/report/, or "
                        "RUN/report-validation/).")
    flags.DEFINE_integer("worst_k", 6, "How many of the worst-scored images of each class to show.")
    flags.DEFINE_integer("num_samples", 40, "How many images the sample grid shows.")
    flags.DEFINE_string("sample_class", None, "Show only this class (name or index) in the sample grid.")
    app.run(report_user_errors(main))
