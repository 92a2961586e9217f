"""Load an exported jaxdigits model: needs jax and numpy only, never the training code.

    from jaxdigits.predictor import load
    predictor = load("model/")                  # written by `python -m jaxdigits.export`
    probs = predictor.predict(images)           # float32 [b, 28, 28] or [b, 28, 28, 1] in [0, 1]

A model folder holds `model.jaxexport` (the predictor compiled to StableHLO by `jax.export`, batch
dimension symbolic), `params.npz` (its parameters, in the order the manifest lists them) and
`manifest.json`. This module imports nothing else from jaxdigits, so a model can be served from a
copy of this one file.

Nothing is served that is not what was exported: the manifest carries SHA-256 digests of the
program's bytes, of the parameters (name, dtype, shape and bytes of each, in the manifest's order)
and of the rest of the manifest. Loading checks the manifest's fields, verifies the program's
digest before jax parses it, checks every parameter's shape and dtype against the program, that
they are finite, and the other two digests. Any damage is a `ModelError`: one sentence naming the
file and what is wrong.
"""

import hashlib
import json
import pathlib
import zipfile
from typing import NamedTuple

import jax
import numpy as np

MANIFEST = "manifest.json"
PROGRAM = "model.jaxexport"
PARAMS = "params.npz"
FORMAT = "jaxdigits-export-2"  # 2: with digests
FIELDS = {"format": str, "model": str, "class_names": list, "input": dict, "params": list,
          "digest": dict}
AGAIN = "export the model again"


class ModelError(ValueError):
    """The folder is not a readable jaxdigits model; the message says why, in one sentence."""


class Predictor(NamedTuple):
    manifest: dict
    call: object  # jitted (params, images) -> {"logits", "probabilities"}
    params: list  # device arrays, in manifest["params"] order

    @property
    def image_shape(self) -> tuple:
        return tuple(self.manifest["input"]["shape"][1:])

    def outputs(self, images) -> dict:
        """{"logits", "probabilities"}: float32 numpy [b, classes] for pixel values in [0, 1]."""
        images = np.asarray(images, np.float32)
        if images.ndim == len(self.image_shape):  # [b, H, W] for one-channel models
            images = images[..., None]
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"expected images of shape [b, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(images.shape)}.")
        out = self.call(self.params, images)
        return {k: np.asarray(v) for k, v in out.items()}

    def predict(self, images) -> np.ndarray:
        """Probabilities, float32 [b, classes]."""
        return self.outputs(images)["probabilities"]


def digests(manifest: dict, program: bytes, params) -> dict:
    """SHA-256 of the program, of the parameters (in manifest["params"] order) and of the manifest
    without its "digest" field (canonical JSON)."""
    weights = hashlib.sha256()
    for name, value in zip(manifest["params"], params):
        value = np.ascontiguousarray(value)
        weights.update(f"{name}\0{value.dtype.str}\0{list(value.shape)}\0".encode())
        weights.update(value.tobytes())
    rest = {k: v for k, v in manifest.items() if k != "digest"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return {"algorithm": "sha256", "program": hashlib.sha256(program).hexdigest(),
            "params": weights.hexdigest(), "manifest": hashlib.sha256(text.encode()).hexdigest()}


def seal(manifest: dict, program: bytes, params) -> dict:
    """The manifest with the digests of itself, the program and the parameters (used by export)."""
    return {**manifest, "digest": digests(manifest, program, params)}


def _name(where, file: str) -> str:
    return f"the model's {file}" if where is None else str(pathlib.Path(where) / file)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"{text} is too large for a float")
    return value


def check_manifest(manifest, where=None) -> None:
    """The manifest's type, format and required fields (ModelError naming the file otherwise)."""
    file = _name(where, MANIFEST)
    if not isinstance(manifest, dict):
        raise ModelError(f"{file} holds a JSON {type(manifest).__name__}, not an object; {AGAIN}.")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{file} says format {manifest.get('format')!r}, this jaxdigits reads "
                         f"{FORMAT!r}; {AGAIN}.")
    for field, kind in FIELDS.items():
        if not isinstance(manifest.get(field), kind):
            got = "nothing" if field not in manifest else f"a {type(manifest[field]).__name__}"
            raise ModelError(f"{file} needs {field!r} as a {kind.__name__}, it holds {got}; {AGAIN}.")
    names, shape = manifest["class_names"], manifest["input"].get("shape")
    if not names or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{file}: 'class_names' must be a non-empty list of strings; {AGAIN}.")
    if not all(isinstance(n, str) for n in manifest["params"]) or len(set(manifest["params"])) != len(
            manifest["params"]):
        raise ModelError(f"{file}: 'params' must list distinct parameter names; {AGAIN}.")
    if not (isinstance(shape, list) and len(shape) > 1 and shape[0] == "b" and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
        raise ModelError(f"{file}: 'input' must give the shape ['b', H, W, C], not {shape!r}; {AGAIN}.")
    digest = manifest["digest"]
    if digest.get("algorithm") != "sha256" or not all(
            isinstance(digest.get(k), str) for k in ("program", "params", "manifest")):
        raise ModelError(f"{file}: 'digest' must hold sha256 digests of the program, params and "
                         f"manifest; {AGAIN}.")


def check_params(manifest: dict, exported, params, where=None) -> None:
    """Each parameter's shape, dtype and finiteness against the program; the output size."""
    file, names = _name(where, PARAMS), manifest["params"]
    expected = exported.in_avals[:-1]  # The program's arguments: the parameters, then the images.
    if not len(names) == len(params) == len(expected):
        raise ModelError(f"{file} holds {len(params)} arrays, the manifest names {len(names)} and the "
                         f"program takes {len(expected)}; {AGAIN}.")
    for name, value, aval in zip(names, params, expected):
        if value.shape != tuple(aval.shape) or value.dtype != aval.dtype:
            raise ModelError(f"{file}: {name!r} is {value.dtype}{list(value.shape)}, the program "
                             f"takes {aval.dtype}{list(aval.shape)}; {AGAIN}.")
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ModelError(f"{file}: {name!r} holds NaN or infinite values, so the model cannot "
                             f"give valid answers; export it from an intact checkpoint.")
    image = [str(d) for d in exported.in_avals[-1].shape]
    if image != [str(d) for d in manifest["input"]["shape"]]:
        raise ModelError(f"{_name(where, MANIFEST)} gives the input shape {manifest['input']['shape']}, "
                         f"the program takes {image}; {AGAIN}.")
    classes = {int(aval.shape[-1]) for aval in exported.out_avals}
    if classes != {len(manifest["class_names"])}:
        raise ModelError(f"{_name(where, MANIFEST)} names {len(manifest['class_names'])} classes, the "
                         f"program gives {', '.join(map(str, sorted(classes)))}; {AGAIN}.")


def load(folder) -> Predictor:
    """Reads and verifies a model folder and returns its Predictor (compiling on the first call)."""
    return from_parts(*read(folder), folder)


def read(folder) -> tuple:
    """(manifest, program bytes, numpy params) of a model folder, the manifest's fields checked."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder; pass one written by `python -m jaxdigits.export`.")
    missing = [name for name in (MANIFEST, PROGRAM, PARAMS) if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder} is not an exported jaxdigits model (missing {', '.join(missing)}).")
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes().decode("utf-8"),
                              parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, OSError, RecursionError) as e:
        raise ModelError(f"{folder / MANIFEST} is not valid JSON ({e}); {AGAIN}.") from None
    check_manifest(manifest, folder)
    try:
        program = (folder / PROGRAM).read_bytes()
        with np.load(folder / PARAMS, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(manifest["params"]):
                raise ModelError(f"{folder / PARAMS} holds the arrays {sorted(npz.files)}, the manifest "
                                 f"names {sorted(manifest['params'])}; {AGAIN}.")
            params = [npz[name] for name in manifest["params"]]
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{folder / PARAMS} cannot be read ({type(e).__name__}: {e}); {AGAIN}.") from None
    return manifest, program, params


def from_parts(manifest: dict, program: bytes, params, where=None) -> Predictor:
    """A verified Predictor from the three parts of a model folder (`where`: the folder, named in
    errors; None for parts in memory, as `serve --workdir` has them)."""
    check_manifest(manifest, where)
    params = [np.asarray(p) for p in params]
    expected = manifest["digest"]
    if digests(manifest, program, [])["program"] != expected["program"]:
        raise ModelError(f"{_name(where, PROGRAM)} does not match the digest in its manifest "
                         f"(damaged or replaced); {AGAIN}.")
    try:
        exported = jax.export.deserialize(bytearray(program))
    except Exception as e:  # jax raises several types for a foreign or truncated program.
        raise ModelError(f"{_name(where, PROGRAM)} cannot be read by jax {jax.__version__} "
                         f"({type(e).__name__}: {e}); {AGAIN}.") from None
    platform = jax.default_backend()
    if platform not in exported.platforms:
        raise ModelError(f"the model was exported for {', '.join(exported.platforms)}, not {platform}; "
                         f"export it with --platforms={platform}.")
    check_params(manifest, exported, params, where)
    actual = digests(manifest, program, params)
    for part, file in (("params", PARAMS), ("manifest", MANIFEST)):
        if actual[part] != expected[part]:
            raise ModelError(f"{_name(where, file)} does not match the digest in the manifest "
                             f"(changed after export); {AGAIN}.")
    return Predictor(manifest, jax.jit(exported.call), [jax.device_put(p) for p in params])


def warm_up(predictor: Predictor, batch_size: int = 1) -> None:
    """Compiles the predictor for `batch_size` so that later calls take milliseconds."""
    predictor.predict(np.zeros((batch_size, *predictor.image_shape), np.float32))
