"""Export a trained run as a self-contained model folder that loads with jax and numpy alone.

    python -m jaxdigits.export --workdir=runs/mlp --out=model/
    python -m jaxdigits.export --checkpoint=runs/cnn/checkpoints/5 --out=model-cnn/

The predictor `(params, images) -> {"logits", "probabilities"}` is serialized with `jax.export`
(StableHLO, batch dimension symbolic, input normalisation inside), its parameters go to
`params.npz` and `manifest.json` says what the model is, what it expects, how accurate it was at
export (measured with the exported program itself on every test image), which versions made
it and the SHA-256 digests that `jaxdigits.predictor.load` verifies when it reads the folder back.
Parameters that are not finite are refused before anything is written, and the folder is written
under a temporary name, loaded back and verified, then renamed into place.
"""

import datetime
import json
import pathlib
import platform
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import jaxdigits
from jaxdigits import cli, inputs, models, predictor, runs, tta
from jaxdigits.errors import UserError
from jaxdigits.metrics import write_json
from jaxdigits.step import Setup


def _param_names(params) -> list[str]:
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return ["/".join(str(getattr(k, "key", k)) for k in path) for path in paths]


def export_program(setup: Setup, params, platforms=("cpu",)) -> bytes:
    """The serialized predictor for float32 [b, *image_shape] pixel values in [0, 1]."""
    leaves, treedef = jax.tree.flatten(params)
    model, mean, std, config = setup.model, setup.mean, setup.std, setup.config

    def predict_fn(param_list, images):
        variables = jax.tree.unflatten(treedef, param_list)
        logits = tta.predict(lambda x: model.apply(variables, (x - mean) / std), images,
                             config.tta_shift, config.tta_flip)
        return {"logits": logits, "probabilities": jax.nn.softmax(logits)}  # [b, classes] each

    (batch,) = jax.export.symbolic_shape("b")
    specs = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
             jax.ShapeDtypeStruct((batch, *setup.image_shape), jnp.float32))
    exported = jax.export.export(jax.jit(predict_fn), platforms=tuple(platforms))(*specs)
    return bytes(exported.serialize())


def score(model: predictor.Predictor, images, labels, batch_size: int = 1000) -> dict:
    """Accuracy of a loaded model over every given image (uint8 [N, H, W, C])."""
    correct = 0
    for start in range(0, len(labels), batch_size):
        probs = model.predict(images[start:start + batch_size].astype(np.float32) / 255.0)
        correct += int((probs.argmax(-1) == labels[start:start + batch_size]).sum())
    return {"accuracy": correct / len(labels), "count": int(len(labels))}


def export_run(path, *, which: str = "best", platforms=("cpu",), data_dir=None):
    """(manifest, program, params) for a run's workdir or checkpoint folder, accuracy measured."""
    setup, params, meta = runs.load_run(path, which)
    params = models.scoring_variables(params)  # The moving average alone where there is one.
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    broken = [name for name, x in zip(_param_names(params), leaves) if not np.isfinite(x).all()]
    if broken:
        raise UserError(f"the parameters of {path} (epoch {meta['epoch']}, {which}) hold NaN or "
                        f"infinite values in {', '.join(broken)}; export refuses a model that "
                        "cannot give valid answers.")
    program = export_program(setup, params, platforms)
    record = next((r for r in meta["history"] if r["epoch"] == meta["epoch"]), {})
    manifest = {
        "format": predictor.FORMAT,
        "model": setup.config.model,
        "parameters": models.count_params(params),
        "dataset": meta["dataset"],
        "class_names": list(meta["class_names"]),
        "input": {"shape": ["b", *setup.image_shape], "dtype": "float32", "range": [0.0, 1.0],
                  "meaning": "pixel / 255, light ink on a dark background as in MNIST"},
        "normalisation": {"mean": setup.mean, "std": setup.std,
                          "note": "applied inside the program: (x - mean) / std"},
        "outputs": {"logits": ["b", len(meta["class_names"])],
                    "probabilities": ["b", len(meta["class_names"])]},
        "source": {"path": str(pathlib.Path(path).absolute()), "epoch": meta["epoch"], "which": which,
                   "validation_accuracy": record.get("val_accuracy")},
        "config": json.loads(setup.config.to_json()),
        "params": _param_names(params),
        "platforms": list(platforms),
        "versions": {"jaxdigits": jaxdigits.__version__, "jax": jax.__version__,
                     "jaxlib": jax.lib.__version__, "numpy": np.__version__,
                     "python": platform.python_version(),
                     "jax_export_calling_convention": jax.export.deserialize(
                         bytearray(program)).calling_convention_version},
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    loaded = predictor.from_parts(predictor.seal(manifest, program, leaves), program, leaves)
    _, _, _, (images, labels) = inputs.prepare_data(setup.config, data_dir)
    score_ = score(loaded, images, labels)
    manifest["accuracy"] = {"test": score_["accuracy"], "test_count": score_["count"],
                            "note": "the exported program on every test image, at export"}
    return predictor.seal(manifest, program, leaves), program, leaves


def write_model(out, manifest: dict, program: bytes, params) -> pathlib.Path:
    """Writes the model folder whole or not at all (a new folder renamed into place)."""
    out = pathlib.Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / predictor.MANIFEST).exists())):
        raise UserError(f"{out} exists and is not an exported model; pass a new or empty --out.")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.absolute().parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / predictor.PROGRAM).write_bytes(program)
        np.savez(tmp / predictor.PARAMS, **dict(zip(manifest["params"], params)))
        write_json(tmp / predictor.MANIFEST, manifest)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp and mkstemp make them private.
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:  # Read back and verified before it takes the name.
            intact = predictor.digests(*predictor.read(tmp)) == manifest["digest"]
        except predictor.ModelError:
            intact = False
        if not intact:
            raise UserError(f"the model written to {tmp} does not read back as written; nothing "
                            "was replaced.")
        old = tmp.with_name(tmp.name + "-old")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv):
    from absl import logging

    FLAGS = cli.start(argv, logging.ERROR)  # Not orbax's read-only notices.
    path = FLAGS.checkpoint or FLAGS.workdir
    if not path:
        raise UserError("pass --workdir=RUN_FOLDER or --checkpoint=CHECKPOINT_FOLDER.")
    if not FLAGS.out:
        raise UserError("pass --out=FOLDER for the exported model.")
    try:
        manifest, program, params = export_run(path, which=FLAGS.which, platforms=FLAGS.platforms,
                                               data_dir=FLAGS.data_dir)
    except predictor.ModelError as e:
        raise UserError(str(e)) from None
    out = write_model(FLAGS.out, manifest, program, params)
    acc = manifest["accuracy"]
    print(f"Exported {manifest['model']} ({manifest['parameters']:,} parameters, {manifest['dataset']}, "
          f"epoch {manifest['source']['epoch']}) to {out}/: test accuracy {100 * acc['test']:.2f}% on "
          f"all {acc['test_count']} images with the exported program. Serve it with: "
          f"python -m jaxdigits.serve --model={out}", file=sys.stderr)


def define_flags():
    from absl import flags

    flags.DEFINE_string("workdir", None, "A run folder written by jaxdigits.train.")
    flags.DEFINE_string("checkpoint", None, "A checkpoint folder (e.g. RUN/best/5) instead of --workdir.")
    flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint of --workdir.")
    flags.DEFINE_string("out", None, "Folder to write the model to (replaced if it holds a model).")
    flags.DEFINE_list("platforms", ["cpu"], "Platforms to compile for: cpu, cuda, rocm, tpu.")
    flags.DEFINE_string("data_dir", None, "Folder with the IDX files (to measure test accuracy).")


if __name__ == "__main__":
    cli.run(main, define_flags)
