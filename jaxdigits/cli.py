"""The command line: flags grouped by topic, the config they give, and the shared main.

Every `Config` field is a flag of `python -m jaxdigits.train` (and of `benchmark`) with the same
name. `--help` lists them by topic, the everyday ones first; `--helpfull` is absl's full list.
"""

import dataclasses
import gc
import pathlib
import sys
import textwrap

from absl import app, flags, logging

from jaxdigits import backend, recipes, runs
from jaxdigits.config import Config, defaults_for
from jaxdigits.errors import UserError, parse_flags, report_user_errors

FLAGS = flags.FLAGS

# Topic -> flags, in the order --help shows them (everyday ones first).
TOPICS = {
    "run": ("model", "recipe", "workdir", "epochs", "seed", "quiet", "resume", "keep_checkpoints"),
    "model": ("hidden", "features", "crop", "dropout", "batch_norm", "ema_decay", "label_smoothing",
              "tta_shift", "tta_flip"),
    "optimizer": ("optimizer", "learning_rate", "batch_size", "schedule", "warmup_epochs",
                  "optimizer_args", "momentum", "b1", "b2", "weight_decay", "l2", "grad_clip"),
    "data": ("dataset", "data_dir", "download", "validation_size", "max_train_examples",
             "eval_batch_size"),
    "augmentation": ("augment_shift", "augment_rotate", "augment_scale", "augment_elastic",
                     "augment_elastic_sigma", "augment_flip"),
    "scale-out": ("num_models", "sweep", "members", "devices", "distributed",
                  "coordinator_address", "num_processes", "process_id"),
    "speed": ("driver", "steps_per_call", "dtype", "layers", "cpu_conv", "compilation_cache"),
}
TOPIC_OF = {name: topic for topic, names in TOPICS.items() for name in names}
HELP_ARGS = ("-h", "-?", "--help", "--helpshort")


def define_config_flags() -> None:
    """One absl flag per Config field, filed under its topic."""
    for f in dataclasses.fields(Config):
        args = (f.name, f.default, f.metadata["help"])
        kwargs = {"module_name": TOPIC_OF[f.name]}
        if f.type in ("tuple[int, ...]", tuple[int, ...]):
            flags.DEFINE_list(f.name, [str(v) for v in f.default], args[2], **kwargs)
        elif f.type in ("bool", bool):
            flags.DEFINE_bool(*args, **kwargs)
        elif f.type in ("int", int):
            flags.DEFINE_integer(*args, **kwargs)
        elif f.type in ("float", float):
            flags.DEFINE_float(*args, **kwargs)
        else:
            flags.DEFINE_string(*args, **kwargs)


def define_train_flags() -> None:
    """The flags of `python -m jaxdigits.train`: the config's (unless defined) and the run's."""
    if "model" not in FLAGS:
        define_config_flags()
    run, data, scale = {"module_name": "run"}, {"module_name": "data"}, {"module_name": "scale-out"}
    flags.DEFINE_string("recipe", None, "Start from a named recipe (jaxdigits/recipes.py): "
                        + "; ".join(f"{name} ({about})" for name, about in recipes.ABOUT.items())
                        + ". Flags given on the command line override it.", **run)
    flags.DEFINE_string("workdir", None, "Run folder (default: runs/DATASET-MODEL-TIMESTAMP). "
                        "An existing run there is continued.", **run)
    flags.DEFINE_bool("quiet", False, "No progress bar (one line per epoch, for logs).", **run)
    flags.DEFINE_bool("resume", False, "Require an existing checkpoint in --workdir to continue "
                      "from.", **run)
    flags.DEFINE_integer("keep_checkpoints", 3, "How many of the latest epoch checkpoints to keep.",
                         **run)
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files (or TFDS data_dir).", **data)
    flags.DEFINE_bool("download", True, "Allow downloading a dataset found nowhere offline.", **data)
    flags.DEFINE_integer("devices", 0, "Train data-parallel on this many devices (0: all visible).",
                         **scale)
    flags.DEFINE_bool("distributed", False, "Multi-host: let JAX detect the cluster (TPU pod "
                      "slice, SLURM, Open MPI) and start jax.distributed.", **scale)
    flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0 "
                        "(default $JAX_COORDINATOR_ADDRESS).", **scale)
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes "
                         "($JAX_NUM_PROCESSES).", **scale)
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index ($JAX_PROCESS_ID).",
                         **scale)


def from_flags(base: Config | None = None) -> Config:
    """The config from the parsed flags; with `base`, only flags given on the command line override it.

    Without `base`, flags not given take their model's and dataset's defaults
    (`config.defaults_for`), then Config's.
    """
    values = {}
    if base is None:
        defaults = defaults_for(FLAGS.model, FLAGS.dataset)
        values.update({k: v for k, v in defaults.items() if not FLAGS[k].present})
    for f in dataclasses.fields(Config):
        flag = FLAGS[f.name]
        if not flag.present and (base is not None or f.name in values):
            continue
        value = flag.value
        if f.name in ("hidden", "features"):
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise UserError(f"--{f.name} must be comma-separated integers, got {value}.") from None
        values[f.name] = value
    return dataclasses.replace(base or Config(), **values)


def run_config():
    """(config, workdir) of `python -m jaxdigits.train`: an existing run's saved config holds
    (flags given now must agree with it); else the recipe's, overridden by the flags given."""
    base = runs.read_config(FLAGS.workdir) if FLAGS.workdir else None
    if base is None and FLAGS.recipe:
        base = recipes.config(FLAGS.recipe, FLAGS.dataset)
    config = from_flags(base)
    return config, FLAGS.workdir or runs.default_workdir(config)


def define_common_flags() -> None:
    """The flags every command of `cli.run` has (defined once)."""
    if "compilation_cache" not in FLAGS:
        flags.DEFINE_bool("compilation_cache", True, "Keep compiled programs in JAX's persistent "
                          "cache (~/.cache/jaxdigits/xla, or $JAX_COMPILATION_CACHE_DIR) so the "
                          "next run starts sooner; JAX_ENABLE_COMPILATION_CACHE=false also turns "
                          "it off.", module_name="speed")


def start(argv, verbosity=logging.WARNING):
    """The shared start of every main: no stray arguments, quiet libraries (orbax logs every file
    it writes at INFO) unless --verbosity is given, never JAX's line per accelerator library not
    installed, and the persistent compilation cache on unless turned off. Returns the flags."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; flags take the form --name=value.")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(verbosity)
    backend.quiet_missing_platforms()
    backend.enable_compilation_cache(FLAGS["compilation_cache"].value
                                     if "compilation_cache" in FLAGS else True)
    return FLAGS


def help_text() -> str:
    """--help: the program's docstring, then its flags by topic (TOPICS order), then the rest."""
    by_module = FLAGS.flags_by_module_dict()  # Topic flags are filed under their topic.
    groups = {topic: [FLAGS[n] for n in names
                      if n in FLAGS and FLAGS[n] in by_module.get(topic, [])]
              for topic, names in TOPICS.items() if topic in by_module}
    program = sys.argv[0]  # absl files the flags a main defines under its path.
    groups[pathlib.Path(program).stem] = by_module.get(program, [])
    lines = [(sys.modules["__main__"].__doc__ or "").strip(), ""]
    for topic, group in groups.items():
        if group:
            lines.append(f"{topic}:")
            lines += [line for flag in group for line in _describe(flag)]
            lines.append("")
    lines.append("--helpfull lists every flag, absl's own included.")
    return "\n".join(lines)


def _describe(flag) -> list[str]:
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    return textwrap.wrap(f"{name}: {flag.help}{default}", 100, initial_indent="  ",
                         subsequent_indent="      ")


def parse(argv):
    """absl's flag parsing, with --help answered by `help_text`."""
    if any(arg in HELP_ARGS for arg in argv[1:argv.index("--") if "--" in argv else None]):
        print(help_text())
        sys.exit(0)
    return parse_flags(argv)


def run(main, define) -> None:
    """Defines the program's flags with `define()` (and `define_common_flags`) and runs `main`
    under absl, a UserError ending it with one sentence and exit code 2.

    Python's cycle collector is told to leave alone the objects alive when `main` starts (the
    imports') and when it ends (`gc.freeze`): they live until the process ends anyway, and
    scanning them again and again, and once more at exit, cost the speedrun 0.3-0.7 s
    (BUILD_NOTES.md, "Start-up"). Every file is closed by then; nothing relies on collection."""
    backend.quiet_missing_platforms()
    define_common_flags()
    define()
    gc.freeze()
    try:
        app.run(report_user_errors(main), flags_parser=parse)
    finally:
        gc.freeze()
