"""Export: the loaded model equals the checkpoint, loads without the training code, and fails clearly."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, run_cli_cases
from jaxdigits import evaluate, export, inputs, models, predictor, runs, step
from jaxdigits.config import Config
from jaxdigits.errors import UserError


def test_exported_model_gives_the_checkpoints_outputs(tiny_run, exported_model, mnist):
    setup, params, meta = runs.load_run(tiny_run[0])
    images = mnist.test_images[:1000]  # uint8 [1000, 28, 28, 1]
    expected = np.asarray(setup.model.apply(params, inputs.normalise(images, setup.mean, setup.std)))
    model = predictor.load(exported_model)
    for batch in (1, 7, 1000):  # The batch dimension is symbolic: any size, same numbers.
        out = model.outputs(images[:batch].astype(np.float32) / 255.0)
        np.testing.assert_allclose(out["logits"], expected[:batch], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, rtol=1e-5)
        assert (out["probabilities"].argmax(-1) == expected[:batch].argmax(-1)).all()
    manifest = model.manifest
    assert manifest["model"] == "mlp" and manifest["dataset"] == "mnist"
    assert manifest["class_names"] == [str(i) for i in range(10)]
    assert manifest["input"]["shape"] == ["b", 28, 28, 1]
    assert manifest["normalisation"] == {**manifest["normalisation"], "mean": setup.mean, "std": setup.std}
    assert manifest["source"]["epoch"] == meta["epoch"]
    assert {"jax", "jaxlib", "numpy", "jaxdigits", "python"} <= set(manifest["versions"])
    checkpoint_score = evaluate.evaluate_run(tiny_run[0])
    assert manifest["accuracy"]["test_count"] == checkpoint_score["count"] == 10000
    assert manifest["accuracy"]["test"] == checkpoint_score["accuracy"] > 0.9


def test_loader_alone_needs_only_jax_and_numpy(exported_model, tmp_path):
    """A copy of predictor.py by itself loads and runs the model; no flax, optax, orbax, jaxdigits."""
    shutil.copy(ROOT / "jaxdigits" / "predictor.py", tmp_path / "standalone_predictor.py")
    code = (
        "import json, sys, numpy as np, standalone_predictor as p\n"
        f"m = p.load({str(exported_model)!r})\n"
        "probs = m.predict(np.zeros((3, 28, 28), np.float32))\n"
        "heavy = sorted({n.split('.')[0] for n in sys.modules} & "
        "{'flax', 'optax', 'orbax', 'jaxdigits', 'tensorflow_datasets', 'absl', 'PIL'})\n"
        "print(json.dumps({'shape': list(probs.shape), 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"shape": [3, 10], "heavy": []}


def test_damaged_or_foreign_model_folders(exported_model, tmp_path):
    """The common cases; tests/test_model_tampering.py damages every part in every way."""
    with pytest.raises(predictor.ModelError, match="not a folder"):
        predictor.load(tmp_path / "absent")
    with pytest.raises(predictor.ModelError, match="missing manifest.json, model.jaxexport, params.npz"):
        predictor.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(exported_model, broken)
    (broken / predictor.PROGRAM).write_bytes(b"not a program")
    with pytest.raises(predictor.ModelError, match="model.jaxexport does not match the digest"):
        predictor.load(broken)
    (broken / predictor.MANIFEST).write_text("{")
    with pytest.raises(predictor.ModelError, match="manifest.json is not valid JSON"):
        predictor.load(broken)
    manifest = json.loads((exported_model / predictor.MANIFEST).read_text())
    (broken / predictor.MANIFEST).write_text(json.dumps({**manifest, "format": "jaxdigits-export-1"}))
    with pytest.raises(predictor.ModelError, match="says format 'jaxdigits-export-1', this jaxdigits "
                       "reads 'jaxdigits-export-2'; export the model again"):
        predictor.load(broken)
    with pytest.raises(ValueError, match=r"expected images of shape \[b, 28, 28, 1\]"):
        predictor.load(exported_model).predict(np.zeros((2, 28, 27)))


def test_export_refuses_parameters_that_are_not_finite(tiny_run, monkeypatch, tmp_path):
    setup, params, meta = runs.load_run(tiny_run[0])
    params = jax.tree.map(lambda x: x.at[0].set(np.nan) if x.ndim == 1 else x, params)
    monkeypatch.setattr(runs, "load_run", lambda path, which: (setup, params, meta))
    with pytest.raises(UserError, match=r"hold NaN or infinite values in .*bias.*; export refuses"):
        export.export_run(tiny_run[0])


@pytest.mark.slow
def test_export_command(tiny_run, tmp_path):
    """Refused over a folder of other files; written into an empty one (both command lines in
    one process, see run_cli_cases)."""
    stale, out = tmp_path / "stale", tmp_path / "model"
    stale.mkdir()
    (stale / "stale.txt").write_text("not a model")
    out.mkdir()
    refused, proc = run_cli_cases("jaxdigits.export", "jaxdigits.export:define_flags", [
        ([f"--workdir={tiny_run[0]}", f"--out={stale}"], None),
        ([f"--workdir={tiny_run[0]}", f"--out={out}"], None)])
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: {stale} exists and is not an exported model; pass a new or empty --out."]
    assert [p.name for p in stale.iterdir()] == ["stale.txt"]
    assert proc.returncode == 0, proc.stderr
    manifest = predictor.load(out).manifest
    assert (f"test accuracy {100 * manifest['accuracy']['test']:.2f}% on all 10000 images" in proc.stderr
            and f"python -m jaxdigits.serve --model={out}" in proc.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.jaxexport", "params.npz"]


def test_export_replaces_a_model_whole(exported_model, tmp_path):
    parts = (json.loads((exported_model / predictor.MANIFEST).read_text()),
             (exported_model / predictor.PROGRAM).read_bytes(),
             list(predictor.load(exported_model).params))
    out = tmp_path / "model"
    export.write_model(out, *parts)
    (out / predictor.PROGRAM).write_bytes(b"old")
    export.write_model(out, *parts)  # Over the model it wrote: replaced, nothing left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (out / predictor.PROGRAM).read_bytes() == parts[1]
    assert predictor.load(out).predict(np.zeros((1, 28, 28))).shape == (1, 10)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not an exported model"):
        export.write_model(tmp_path / "file", *parts)


def test_export_for_several_platforms(tiny_run, exported_model, mnist):
    setup, params, _ = runs.load_run(tiny_run[0])
    manifest = json.loads((exported_model / predictor.MANIFEST).read_text())
    reference = predictor.load(exported_model)
    images = mnist.test_images[:16].astype(np.float32) / 255.0
    leaves = [np.asarray(p) for p in reference.params]
    program = export.export_program(setup, params, ("cpu", "cuda"))
    both = predictor.from_parts(predictor.seal(manifest, program, leaves), program, leaves)
    np.testing.assert_array_equal(both.predict(images), reference.predict(images))
    with pytest.raises(predictor.ModelError, match="model.jaxexport does not match the digest"):
        predictor.from_parts(manifest, program, leaves)  # Not the program the manifest was sealed with.
    program = export.export_program(setup, params, ("cuda",))
    with pytest.raises(predictor.ModelError, match="exported for cuda, not cpu; export it with --platforms=cpu"):
        predictor.from_parts(predictor.seal(manifest, program, leaves), program, leaves)


@pytest.mark.parametrize("layers", [pytest.param("fast", marks=pytest.mark.slow), "plain"])
def test_exported_cnn_gives_the_models_outputs_at_any_batch_size(layers, mnist):
    """The CNN's program (on CPU its first layer is fastconv.conv_relu_pool, whose reshapes must
    hold for a symbolic batch) gives model.apply's logits."""
    setup = step.make_setup(Config(model="cnn", layers=layers), 256, (28, 28, 1), 10, 0.13, 0.31)
    params = models.init_params(setup.model, jax.random.key(0), (28, 28, 1))
    leaves, program = [np.asarray(x) for x in jax.tree.leaves(params)], export.export_program(setup, params)
    manifest = {"format": predictor.FORMAT, "model": "cnn", "class_names": list("0123456789"),
                "input": {"shape": ["b", 28, 28, 1]}, "params": [str(i) for i in range(len(leaves))]}
    model = predictor.from_parts(predictor.seal(manifest, program, leaves), program, leaves)
    images = mnist.test_images[:5]
    expected = np.asarray(jax.jit(setup.model.apply)(params, inputs.normalise(images, 0.13, 0.31)))
    for batch in (1, 5):
        out = model.outputs(images[:batch].astype(np.float32) / 255.0)
        np.testing.assert_allclose(out["logits"], expected[:batch], rtol=1e-5, atol=1e-5)
