"""Evaluate a trained run on the whole test set (every image, no truncated batch) and report.

    python -m jaxdigits.evaluate --workdir=runs/mnist-cnn-20261122-010000   # report in RUN/report/
    python -m jaxdigits.evaluate --checkpoint=runs/.../best/4 --split=validation
    python -m jaxdigits.evaluate --workdir=runs/mlp-x4          # a --num_models run: members, ensemble
    python -m jaxdigits.evaluate --workdir=runs/a,runs/b,runs/c  # the ensemble of separate runs

The report of one run (metrics, confusion matrix, worst examples, samples, training curves; see
`jaxdigits.report`) goes to `--report_dir`, by default `RUN/report/` (`RUN/report-validation/`
for the validation split); nothing else in the run folder is touched. Several runs get each
member's score and the ensemble's. The program ends with a few labelled lines (which checkpoint
was scored, accuracy, loss, images, where the report is); `--json` prints one JSON object instead.
"""

import json
import pathlib

from jaxdigits import cli, ensemble, inputs, members, report, runs, scoring
from jaxdigits.config import Config
from jaxdigits.errors import UserError, check_writable_folder


def split_data(path, config: Config, split: str, data_dir=None):
    """(uint8 images, labels) of the run's `split`: test, or the validation set its seed carved."""
    _, _, val, test = inputs.prepare_data(config, data_dir)
    images, labels = {"test": test, "validation": val}[split]
    if not len(labels):
        raise UserError(f"the run at {path} has no {split} examples (--validation_size=0).")
    return images, labels


def evaluate_run(path, *, which: str = "best", split: str = "test", data_dir=None) -> dict:
    """Loss and accuracy of a saved run over every example of `split` (test or validation)."""
    setup, params, meta = runs.load_run(path, which)
    images, labels = split_data(path, setup.config, split, data_dir)
    result = scoring.make_evaluator(setup)(params, inputs.to_device(images, labels))
    return {"split": split, "epoch": meta["epoch"], "model": setup.config.model,
            "dataset": meta["dataset"], "scored": report.scored_label(meta), **result}


def report_run(path, *, which: str = "best", split: str = "test", data_dir=None, report_dir=None,
               **options) -> dict:
    """The full report of a saved run (`report.make_report`, `options` go there), written to
    `report_dir` (default: RUN/report/, or RUN/report-validation/)."""
    setup, params, meta = runs.load_run(path, which)
    images, labels = split_data(path, setup.config, split, data_dir)
    run_dir = pathlib.Path(meta["checkpoint"]).parent.parent
    report_dir = report_dir or run_dir / ("report" if split == "test" else f"report-{split}")
    return report.make_report(setup, params, meta, images, labels, split=split, out_dir=report_dir,
                              **options)


def run_paths(path) -> list[str]:
    """The folders of --workdir / --checkpoint: one, or several separated by commas; each exists."""
    if not path:
        raise UserError("pass --workdir=RUN_FOLDER or --checkpoint=CHECKPOINT_FOLDER.")
    paths = path.split(",")
    if not all(paths):
        raise UserError(f"{path!r} has an empty entry; separate run folders by single commas.")
    for p in paths:
        if not pathlib.Path(p).exists():
            raise UserError(f"{p} does not exist.")
    return paths


def main(argv):
    from absl import logging

    FLAGS = cli.start(argv, logging.ERROR)  # Orbax warns that a read-only manager is read-only.
    if FLAGS.checkpoint is not None and FLAGS.workdir is not None:
        raise UserError("pass --workdir or --checkpoint, not both.")
    paths = run_paths(FLAGS.checkpoint or FLAGS.workdir)
    if FLAGS.report_dir is not None:
        check_writable_folder(FLAGS.report_dir, "--report_dir")
    report.check_options(FLAGS.worst_k, FLAGS.num_samples)
    group = members.member_paths(paths[0]) if len(paths) == 1 else paths
    if group:
        result = ensemble.evaluate_ensemble(group, which=FLAGS.which, split=FLAGS.split,
                                            data_dir=FLAGS.data_dir)
        print(json.dumps(result) if FLAGS.json else ensemble.format_ensemble(result))
        return
    result = report_run(paths[0], which=FLAGS.which, split=FLAGS.split, data_dir=FLAGS.data_dir,
                        report_dir=FLAGS.report_dir, worst_k=FLAGS.worst_k,
                        sample_class=FLAGS.sample_class, num_samples=FLAGS.num_samples)
    print(json.dumps(report.brief(result)) if FLAGS.json else report.format_summary(result))


def define_flags():
    from absl import flags

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
    flags.DEFINE_bool("json", False, "Print one JSON object on stdout instead of the summary.")


if __name__ == "__main__":
    cli.run(main, define_flags)
