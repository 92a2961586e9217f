"""Hash of every model's training program: the trainer's 8-step chunk on the bundled MNIST,
as StableHLO without source locations and (`--compiled`) as the HLO XLA optimises from it.

    python -m benchmarks.program_hash --compiled --json=/tmp/hashes.json   # 27 s; 7 s without

Result, 2-core Intel Xeon (AVX-512), jax 0.10.2, oneDNN installed (`--cpu_conv=auto` resolves
to onednn), at commit f78acda and again in the working tree of the module split that followed:

    model      StableHLO         compiled
    linear     c54308bb70b93356  e0cc9d809a56700e
    mlp        5f96accaba66845c  c659cfa5c842a6e8
    cnn        cc2a567ea661661d  1fc24cf6436f8769
    cnn_small  c061b5733abec424  817d6cb7324c29dc
    cnn_tiny   334afe2894009783  59380636b50f93f6

Run it before and after a refactor (the old commit from `git archive`) and compare: code that
only moves leaves every hash unchanged. Linear's and the MLP's StableHLO hashes are also those
recorded when data-parallel training was added (2-core AMD EPYC, 2026-11-22; BUILD_NOTES.md).

The StableHLO does not show XLA's compile options (`--cpu_conv`'s kernels); the compiled hash
does. Both depend on jax's version and, for the CNNs, on whether oneDNN's gradients are used
(custom calls; the JSON records the choice).
"""

import hashlib
import re

import jax
from absl import app, flags

from benchmarks import common
from jaxdigits import backend, cli, errors, models
from jaxdigits import config as config_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("models", list(models.MODELS), "Models to hash.")
    flags.DEFINE_integer("steps", 8, "Steps in the hashed chunk (the CPU driver's 8).")
    flags.DEFINE_string("cpu_conv", "auto", "The models' --cpu_conv (auto: onednn if installed).")
    flags.DEFINE_bool("compiled", False, "Also hash the program XLA compiles (slower).")
    flags.DEFINE_string("json", None, "Write the hashes here as JSON.")


def lowered(model: str, *, steps: int = 8, cpu_conv: str = "auto"):
    """`model`'s `steps`-step training chunk, unrolled, lowered (its `python -m jaxdigits.train`
    defaults apart from the number of epochs)."""
    defaults = {k: v for k, v in config_lib.MODEL_DEFAULTS.get(model, {}).items() if k != "epochs"}
    config = config_lib.Config(model=model, driver="unroll", cpu_conv=cpu_conv, **defaults)
    return common.lowered_chunk(config, steps)[0]


def stablehlo_text(lowered) -> str:
    """The lowered program's StableHLO without source locations."""
    text = re.sub(r"^#loc.*\n", "", lowered.as_text(), flags=re.M)
    return re.sub(r" loc\(.*?\)$", "", text, flags=re.M)


def compiled_text(lowered) -> str:
    """The HLO XLA optimised, with the compile options the trainer gives it, without its tables
    of source files, functions and stack frames and the metadata that points into them."""
    text = re.sub(r"^(FileNames|FunctionNames|FileLocations|StackFrames)\n(?:.+\n)*\n?", "",
                  lowered.compile().as_text(), flags=re.M)
    return re.sub(r", metadata=\{[^}]*\}", "", text)


def digest(text: str) -> dict:
    return {"hash": hashlib.sha256(text.encode()).hexdigest()[:16], "chars": len(text)}


def program_hashes(model_names, *, steps: int = 8, cpu_conv: str = "auto",
                   compiled: bool = False) -> dict:
    """{model: {"hash": the first 16 hex digits of the StableHLO's SHA-256, "chars": its length,
    and with `compiled`, "compiled": the same of the optimised HLO}}."""
    out = {}
    for model in model_names:
        program = lowered(model, steps=steps, cpu_conv=cpu_conv)
        out[model] = digest(stablehlo_text(program))
        if compiled:
            out[model]["compiled"] = digest(compiled_text(program))
        print(model, out[model]["hash"], out[model]["chars"],
              *(["compiled", out[model]["compiled"]["hash"]] if compiled else []), flush=True)
    return out


def main(argv):
    cli.start(argv)
    hashes = program_hashes(FLAGS.models, steps=FLAGS.steps, cpu_conv=FLAGS.cpu_conv,
                            compiled=FLAGS.compiled)
    common.write_json(FLAGS.json, {
        "models": hashes, "steps": FLAGS.steps, "cpu_conv": FLAGS.cpu_conv,
        "cpu_conv_resolved": backend.cpu_conv_choice(FLAGS.cpu_conv), "jax": jax.__version__,
        "backend": jax.default_backend()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
