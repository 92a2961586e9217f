"""Exported model folders damaged in every way we could think of: each is refused at load with one
sentence (a ModelError) that names the damaged file, and nothing is ever served from it."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from jaxdigits import predictor

MANIFEST, PROGRAM, PARAMS = predictor.MANIFEST, predictor.PROGRAM, predictor.PARAMS


def edit_manifest(change, reseal=False):
    """A damage: the manifest changed in place by `change(dict)`."""
    def damage(folder):
        manifest = json.loads((folder / MANIFEST).read_text())
        change(manifest)
        if reseal:  # As someone would who knows the format: the digests made to match again.
            manifest = predictor.seal(manifest, (folder / PROGRAM).read_bytes(), read_params(folder))
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return damage


def read_params(folder) -> list:
    manifest = json.loads((folder / MANIFEST).read_text())
    with np.load(folder / PARAMS) as npz:
        return [npz[name] for name in manifest["params"]]


def edit_params(change, reseal=False):
    """A damage: the arrays of params.npz changed by `change(dict name -> array)`, saved again."""
    def damage(folder):
        with np.load(folder / PARAMS) as npz:
            arrays = dict(npz)
        change(arrays)
        np.savez(folder / PARAMS, **arrays)
        if reseal:
            edit_manifest(lambda m: None, reseal=True)(folder)
    return damage


def edit_bytes(name, change):
    def damage(folder):
        (folder / name).write_bytes(change((folder / name).read_bytes()))
    return damage


def flip(data: bytes, at: float = 0.5) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]


def first_weight(arrays) -> str:
    return next(name for name in arrays if arrays[name].ndim == 2)


def stored_npz(folder):
    """params.npz rewritten without compression, so a byte flip lands in an array's data (the
    zip's CRC is recomputed: only the digest can tell)."""
    with np.load(folder / PARAMS) as npz:
        arrays = dict(npz)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, value in arrays.items():
            raw = io.BytesIO()
            np.save(raw, value)
            data = raw.getvalue()
            z.writestr(name + ".npy", flip(data, 0.9) if value.ndim == 2 else data)
    (folder / PARAMS).write_bytes(buffer.getvalue())


CASES = {
    # manifest.json
    "manifest is a list": (edit_bytes(MANIFEST, lambda b: b"[" + b + b"]"), MANIFEST, "holds a JSON list, not an object"),
    "manifest is a string": (edit_bytes(MANIFEST, lambda b: b'"model"'), MANIFEST, "holds a JSON str"),
    "manifest is not JSON": (edit_bytes(MANIFEST, lambda b: b[:len(b) // 2]), MANIFEST, "is not valid JSON"),
    "manifest is not UTF-8": (edit_bytes(MANIFEST, lambda b: b"\xff" + b), MANIFEST, "is not valid JSON"),
    "manifest holds NaN": (edit_bytes(MANIFEST, lambda b: b.replace(b'"accuracy": {', b'"x": NaN, "accuracy": {', 1)),
                           MANIFEST, "NaN is not valid JSON"),
    "manifest holds 1e999": (edit_bytes(MANIFEST, lambda b: b.replace(b'"accuracy": {', b'"x": 1e999, "accuracy": {', 1)),
                             MANIFEST, "too large for a float"),
    "manifest nested deeply": (edit_bytes(MANIFEST, lambda b: b"[" * 100000 + b"]" * 100000), MANIFEST,
                               "is not valid JSON"),
    "old format": (edit_manifest(lambda m: m.update(format="jaxdigits-export-1")), MANIFEST,
                   "says format 'jaxdigits-export-1', this jaxdigits reads 'jaxdigits-export-2'"),
    **{f"no {field}": (edit_manifest(lambda m, f=field: m.pop(f)), MANIFEST,
                       f"needs '{field}' as a \\w+, it holds nothing")
       for field in ("model", "class_names", "input", "params", "digest")},
    "class_names a string": (edit_manifest(lambda m: m.update(class_names="0123456789")), MANIFEST,
                             "needs 'class_names' as a list, it holds a str"),
    "class names cut short": (edit_manifest(lambda m: m["class_names"].pop()), MANIFEST,
                              "names 9 classes, the program gives 10"),
    "class names not strings": (edit_manifest(lambda m: m.update(class_names=list(range(10)))), MANIFEST,
                                "must be a non-empty list of strings"),
    "class name changed": (edit_manifest(lambda m: m["class_names"].__setitem__(3, "8")), MANIFEST,
                           "does not match the digest in the manifest"),
    "accuracy edited": (edit_manifest(lambda m: m["accuracy"].update(test=0.999)), MANIFEST,
                        "does not match the digest in the manifest"),
    "input shape wrong": (edit_manifest(lambda m: m["input"].update(shape=["b", 32, 32, 1]), reseal=True),
                          MANIFEST, r"input shape \['b', 32, 32, 1\], the program takes \['b', '28', '28', '1'\]"),
    "input shape not a shape": (edit_manifest(lambda m: m["input"].update(shape=[28, 28])), MANIFEST,
                                "must give the shape"),
    "param names repeated": (edit_manifest(lambda m: m["params"].append(m["params"][0])), MANIFEST,
                             "must list distinct parameter names"),
    "param names swapped": (edit_manifest(lambda m: m["params"].reverse(), reseal=True), PARAMS,
                            r"is float32\[10\], the program takes float32\[128, 10\]|is float32\[\d+(, \d+)?\], the program"),
    "digest of another algorithm": (edit_manifest(lambda m: m["digest"].update(algorithm="md5")), MANIFEST,
                                    "must hold sha256 digests"),
    # model.jaxexport
    "program byte flipped": (edit_bytes(PROGRAM, flip), PROGRAM, "does not match the digest in its manifest"),
    "program truncated": (edit_bytes(PROGRAM, lambda b: b[:100]), PROGRAM, "does not match the digest"),
    "program empty": (edit_bytes(PROGRAM, lambda b: b""), PROGRAM, "does not match the digest"),
    "program garbage, resealed": (lambda f: (edit_bytes(PROGRAM, lambda b: b"not a program")(f),
                                             edit_manifest(lambda m: None, reseal=True)(f)),
                                  PROGRAM, "cannot be read by jax"),
    # params.npz
    "params byte flipped in the zip": (edit_bytes(PARAMS, flip), PARAMS, "cannot be read|does not match"),
    "params data flipped, CRC fixed": (stored_npz, PARAMS, "does not match the digest in the manifest"),
    "params truncated": (edit_bytes(PARAMS, lambda b: b[:len(b) // 2]), PARAMS, "cannot be read"),
    "params not a zip": (edit_bytes(PARAMS, lambda b: b"PK\x03\x04 nonsense"), PARAMS, "cannot be read"),
    "params empty": (edit_bytes(PARAMS, lambda b: b""), PARAMS, "cannot be read"),
    "an array missing": (edit_params(lambda a: a.pop(first_weight(a))), PARAMS, "holds the arrays"),
    "an array extra": (edit_params(lambda a: a.update(extra=np.zeros(3))), PARAMS, "holds the arrays"),
    "an array transposed": (edit_params(lambda a: a.update({first_weight(a): a[first_weight(a)].T}), reseal=True),
                            PARAMS, r"is float32\[\d+, \d+\], the program takes float32\[\d+, \d+\]"),
    "an array float64": (edit_params(lambda a: a.update({first_weight(a): a[first_weight(a)].astype(np.float64)}),
                                     reseal=True), PARAMS, r"is float64\[\d+, \d+\], the program takes float32"),
    "an array of objects": (edit_params(lambda a: a.update({first_weight(a): np.array([None, 1])})), PARAMS,
                            "cannot be read"),
    "a weight changed slightly": (edit_params(lambda a: a[first_weight(a)].__iadd__(1e-3)), PARAMS,
                                  "does not match the digest in the manifest"),
    "NaN parameters": (edit_params(lambda a: a[first_weight(a)].__setitem__((0, 0), np.nan)), PARAMS,
                       "holds NaN or infinite values"),
    "NaN parameters, resealed": (edit_params(lambda a: a[first_weight(a)].__setitem__((0, 0), np.nan),
                                             reseal=True), PARAMS, "holds NaN or infinite values"),
    "infinite parameters": (edit_params(lambda a: a[first_weight(a)].__setitem__((1, 1), -np.inf)), PARAMS,
                            "holds NaN or infinite values"),
    # the folder
    "manifest missing": (lambda f: (f / MANIFEST).unlink(), None, "missing manifest.json"),
    "params a folder": (lambda f: ((f / PARAMS).unlink(), (f / PARAMS).mkdir()), None, "missing params.npz"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_model_is_refused_in_one_sentence(exported_model, tmp_path, case):
    damage, file, message = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(exported_model, folder)
    damage(folder)
    with pytest.raises(predictor.ModelError, match=message) as error:
        predictor.load(folder)
    sentence = str(error.value)
    assert "\n" not in sentence and sentence.endswith(".") and sentence.startswith(str(folder))
    if file:
        assert sentence.startswith(str(folder / file)), sentence


def test_an_intact_copy_loads(exported_model, tmp_path):
    """The damage is what is refused: a byte-for-byte copy of the folder serves the same answers."""
    shutil.copytree(exported_model, tmp_path / "model")
    images = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(predictor.load(tmp_path / "model").predict(images),
                                  predictor.load(exported_model).predict(images))
