"""Load an exported jaxdigits model: needs jax and numpy only, never the training code.

    from jaxdigits.predictor import load
    predictor = load("model/")                  # written by `python -m jaxdigits.export`
    probs = predictor.predict(images)           # float32 [b, 28, 28] or [b, 28, 28, 1] in [0, 1]

A model folder holds `model.jaxexport` (the predictor compiled to StableHLO by `jax.export`, batch
dimension symbolic), `params.npz` (its parameters, in the order the manifest lists them) and
`manifest.json`. This module imports nothing else from jaxdigits, so a model can be served from a
copy of this one file.
"""

import json
import pathlib
from typing import NamedTuple

import jax
import numpy as np

MANIFEST = "manifest.json"
PROGRAM = "model.jaxexport"
PARAMS = "params.npz"
FORMAT = "jaxdigits-export-1"


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


def load(folder) -> Predictor:
    """Reads a model folder and returns its Predictor (compiling happens on the first call)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder; pass one written by `python -m jaxdigits.export`.")
    missing = [name for name in (MANIFEST, PROGRAM, PARAMS) if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder} is not an exported jaxdigits model (missing {', '.join(missing)}).")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        program = (folder / PROGRAM).read_bytes()
        with np.load(folder / PARAMS, allow_pickle=False) as npz:
            params = [npz[name] for name in manifest["params"]]
    except (ValueError, KeyError, OSError) as e:
        raise ModelError(f"{folder} holds a damaged model ({type(e).__name__}: {e}).") from None
    return from_parts(manifest, program, params)


def from_parts(manifest: dict, program: bytes, params) -> Predictor:
    """A Predictor from the three parts of a model folder (used by `serve --workdir` in memory)."""
    if manifest.get("format") != FORMAT:
        raise ModelError(f"the model's format is {manifest.get('format')!r}, this jaxdigits reads "
                         f"{FORMAT!r}; export it again.")
    try:
        exported = jax.export.deserialize(bytearray(program))
    except Exception as e:  # jax raises several types for a foreign or truncated program.
        raise ModelError(f"the model's program cannot be read by jax {jax.__version__} "
                         f"({type(e).__name__}: {e}); export it again.") from None
    platform = jax.default_backend()
    if platform not in exported.platforms:
        raise ModelError(f"the model was exported for {', '.join(exported.platforms)}, not {platform}; "
                         f"export it with --platforms={platform}.")
    params = [jax.device_put(np.asarray(p)) for p in params]
    return Predictor(manifest, jax.jit(exported.call), params)


def warm_up(predictor: Predictor, batch_size: int = 1) -> None:
    """Compiles the predictor for `batch_size` so that later calls take milliseconds."""
    predictor.predict(np.zeros((batch_size, *predictor.image_shape), np.float32))
