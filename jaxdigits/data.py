"""Datasets: MNIST-format IDX files found offline (or downloaded and verified), TFDS, splits.

An explicit `data_dir` (the `--data_dir` flag) is the only place looked at: it must be a folder
holding the four files, directly or in its NAME/ sub-folder, or the run stops with one sentence
(`check_data_dir`); it is never passed over for another copy. Without it, in order:
  1. the environment variable `JAXDIGITS_DATA_DIR` (a folder with the files, or with one
     sub-folder per dataset name; it must exist, but may lack a dataset);
  2. the copy bundled with jaxdigits (MNIST only) or a system copy (Debian's
     `dataset-fashion-mnist` puts Fashion-MNIST under /usr/share/datasets/fashion-mnist);
  3. the user cache, `$JAXDIGITS_CACHE_DIR/NAME` or `~/.cache/jaxdigits/NAME`;
  4. a download from the registered URLs into the cache, verified and written atomically.
Every file is verified by SHA-256: of its decompressed payload (so a re-compressed copy passes)
or of the published `.gz`.
"""

import dataclasses
import gzip
import hashlib
import os
import pathlib
import struct
import tempfile
import urllib.request
import zlib

import numpy as np

from jaxdigits.errors import UserError
from jaxdigits.registry import FILES, REGISTRY, IdxSpec

_BUNDLED = pathlib.Path(__file__).parent / "datasets"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays: images uint8 [N, H, W, C], labels int32 [N]."""
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str  # Where the data was read from, for the log.

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes, path: str) -> np.ndarray:
    """Parses an uncompressed IDX payload of unsigned bytes; errors name `path`."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] not in (1, 3):
        raise UserError(f"{path} is not an IDX file of unsigned bytes (wrong magic number "
                        f"{data[:4].hex() or 'empty'}); the file is corrupt or of another format.")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated: it ends inside its IDX header.")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise UserError(f"{path} holds {len(data)} bytes where its IDX header {shape} promises "
                        f"{expected}; the file is truncated or corrupt.")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_verified(path: pathlib.Path, spec: IdxSpec, stem: str) -> np.ndarray:
    """Reads one IDX(.gz) file, checks its SHA-256 against the registry, and parses it."""
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}).") from None
    gz_ok = path.suffix == ".gz" and sha256(blob) == spec.gz_sha256.get(stem)
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path} is not a readable gzip file ({e}); delete it or replace it "
                            "with a good copy.") from None
    else:
        raw = blob
    array = parse_idx(raw, str(path))  # Structure first: its errors say more than a checksum.
    if gz_ok:
        return array
    if stem not in spec.raw_sha256:
        raise UserError(f"{path} cannot be verified: {spec.name} has no registered checksum of the "
                        "decompressed file, and this is not the published .gz; use the published "
                        "file.")
    digest = sha256(raw)
    if digest != spec.raw_sha256[stem]:
        raise UserError(f"{path} does not match the registered SHA-256 of {spec.name}'s {stem} "
                        f"(got {digest[:16]}..., expected {spec.raw_sha256[stem][:16]}...); "
                        "it is corrupt or from another dataset.")
    return array


def _find_file(folder: pathlib.Path, stem: str):
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _candidate_dirs(spec: IdxSpec):
    """The places to look without an explicit data_dir, in order, as (description, folder) pairs."""
    places = []
    env = os.environ.get("JAXDIGITS_DATA_DIR")
    if env:
        _existing_folder(env, "$JAXDIGITS_DATA_DIR")
        places += [(f"$JAXDIGITS_DATA_DIR={env}", pathlib.Path(env)),
                   (f"$JAXDIGITS_DATA_DIR={env}/{spec.name}", pathlib.Path(env) / spec.name)]
    places.append(("the bundled copy", _BUNDLED / spec.name))
    places += [(d, pathlib.Path(d)) for d in spec.system_dirs]
    places.append(("the cache " + str(cache_dir(spec.name)), cache_dir(spec.name)))
    return places


def _existing_folder(value: str, what: str) -> pathlib.Path:
    """`value` as a folder that exists and can be listed; else one sentence naming `what`."""
    if not value:
        raise UserError(f"{what} is empty; name a folder, or leave it out to use the default places.")
    folder = pathlib.Path(value)
    if not folder.exists():
        raise UserError(f"{what}={value} does not exist.")
    if not folder.is_dir():
        raise UserError(f"{what}={value} is a file, not a folder.")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise UserError(f"{what}={value} cannot be read (permission denied).")
    return folder


def check_data_dir(name: str, data_dir) -> pathlib.Path | None:
    """The folder under an explicit `data_dir` that holds dataset `name`, or None without one.

    Cheap (it lists folders, reads no file), so a program can call it before writing anything.
    For an IDX dataset the four files (each .gz or uncompressed) must be in `data_dir` or in
    `data_dir/NAME`; for `tfds:NAME` the folder must exist (TFDS looks inside it). Otherwise
    raises UserError naming the folder and what was looked for.
    """
    if data_dir is None:
        return None
    folder = _existing_folder(str(data_dir), "--data_dir")
    if name.startswith("tfds:") or name not in REGISTRY:
        return folder  # TFDS's own layout; an unknown name is refused by load_dataset.
    candidates = (folder, folder / name)
    for candidate in candidates:
        if all(_find_file(candidate, stem) for stem in FILES):
            return candidate
    found = [str(p) for c in candidates for p in (_find_file(c, stem) for stem in FILES) if p]
    raise UserError(f"--data_dir={data_dir} does not hold the {name} dataset: looked for "
                    f"{', '.join(FILES)} (each .gz or uncompressed) in {folder} and in "
                    f"{folder / name}" + (f"; found only {', '.join(found)}" if found else "")
                    + "; pass the folder that holds all four, or leave --data_dir out.")


def cache_dir(name: str) -> pathlib.Path:
    root = os.environ.get("JAXDIGITS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxdigits")
    return pathlib.Path(root) / name


def download(spec: IdxSpec, folder: pathlib.Path, timeout: float = 30.0) -> None:
    """Downloads every missing file of `spec` into `folder`, each verified, then renamed in place.

    A file is written under a temporary name in the same folder and renamed only after its
    SHA-256 matched, so an interrupted or corrupt download never leaves a file under the real name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stem in FILES:
        target = folder / f"{stem}.gz"
        if target.exists():
            continue
        errors = []
        for base in spec.urls:
            url = base + f"{stem}.gz"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part.gz")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                    out.write(r.read())
                read_verified(pathlib.Path(tmp), spec, stem)
                os.replace(tmp, target)
                break
            except (OSError, ValueError, UserError) as e:
                errors.append(f"{url}: {e}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise OSError("; ".join(errors))


def load_idx(name: str, data_dir=None, allow_download: bool = True) -> Dataset:
    """Loads a registered MNIST-format dataset from the first place that has all its files."""
    spec = REGISTRY[name]
    explicit = check_data_dir(name, data_dir)
    if explicit is not None:
        return _load_files(spec, [_find_file(explicit, s) for s in FILES], source=str(explicit))
    tried = []
    for where, folder in _candidate_dirs(spec):
        paths = [_find_file(folder, stem) for stem in FILES]
        if all(paths):
            return _load_files(spec, paths, source=str(folder))
        tried.append(where)
    folder = cache_dir(name)
    if allow_download:
        try:
            download(spec, folder)
            return _load_files(spec, [folder / f"{s}.gz" for s in FILES], source=str(folder))
        except OSError as e:
            tried.append(f"a download ({str(e)[:300]})")
    else:
        tried.append("no download (--nodownload)")
    raise UserError(f"could not find the {name} IDX files ({', '.join(f + '.gz' for f in FILES)}): "
                    f"tried {'; '.join(tried)}; put them in a folder and pass --data_dir=FOLDER "
                    "or set JAXDIGITS_DATA_DIR.")


def _load_files(spec: IdxSpec, paths, source: str) -> Dataset:
    train_x, train_y, test_x, test_y = (read_verified(p, spec, s) for p, s in zip(paths, FILES))
    for images, labels, (pi, pl) in ((train_x, train_y, paths[:2]), (test_x, test_y, paths[2:])):
        if images.ndim != 3 or labels.ndim != 1:
            raise UserError(f"{pi if images.ndim != 3 else pl} has shape "
                            f"{images.shape if images.ndim != 3 else labels.shape}; expected "
                            "images [N, H, W] and labels [N].")
        if len(images) != len(labels):
            raise UserError(f"{pi} holds {len(images)} images but {pl} holds {len(labels)} labels.")
        if labels.max(initial=0) >= len(spec.class_names):
            raise UserError(f"{pl} has label {labels.max()}, outside the "
                            f"{len(spec.class_names)} classes of {spec.name}.")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(f"{paths[0]} holds images of shape {train_x.shape[1:]} but {paths[2]} "
                        f"holds {test_x.shape[1:]}.")
    return Dataset(spec.name, train_x[..., None], train_y.astype(np.int32), test_x[..., None],
                   test_y.astype(np.int32), spec.class_names, source)


def load_tfds(name: str, data_dir=None) -> Dataset:
    """Loads a TFDS image-classification dataset through `tfds.data_source` (no TensorFlow)."""
    import tensorflow_datasets as tfds  # Imported here: it is slow to import and often unused.

    check_data_dir(f"tfds:{name}", data_dir)
    try:
        features = tfds.builder(name, data_dir=data_dir).info.features
        sources = {split: tfds.data_source(name, split=split, data_dir=data_dir, download=False)
                   for split in ("train", "test")}
    except Exception as e:  # TFDS raises many types; all mean "not there".
        raise UserError(f"TFDS dataset {name!r} could not be opened from "
                        f"{data_dir or 'the TFDS default data_dir'} ({str(e).splitlines()[0][:200]}); "
                        f"prepare it with `tfds build {name}` or pass --data_dir.") from None
    image_key = next((k for k in ("image", "img") if k in features), None)
    if image_key is None or "label" not in features:
        raise UserError(f"TFDS dataset {name!r} has no 'image' and 'label' features; only image "
                        "classification datasets work.")
    splits = {}
    for split, source in sources.items():
        records = [source[i] for i in range(len(source))]
        images = np.stack([np.asarray(r[image_key], np.uint8) for r in records])
        if images.ndim == 3:
            images = images[..., None]  # [N, H, W] -> [N, H, W, 1]
        labels = np.asarray([r["label"] for r in records], np.int32)
        splits[split] = (images, labels)
    return Dataset(f"tfds:{name}", *splits["train"], *splits["test"],
                   tuple(features["label"].names), source=f"tfds {name}")


def load_dataset(name: str, data_dir=None, allow_download: bool = True) -> Dataset:
    """Loads `mnist`, `fashion_mnist`, `kmnist` or `tfds:NAME`."""
    if name.startswith("tfds:"):
        return load_tfds(name[len("tfds:"):], data_dir)
    if name not in REGISTRY:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(REGISTRY)} "
                        "or tfds:NAME.")
    return load_idx(name, data_dir, allow_download)


def split_validation(images, labels, size: int, seed: int):
    """Carves a validation set of `size` examples from the training set, fixed by `seed`.

    Returns (train_images, train_labels, val_images, val_labels).
    """
    if not 0 <= size < len(images):
        raise UserError(f"--validation_size={size} must be at least 0 and below the "
                        f"{len(images)} training examples.")
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = np.sort(order[:size]), np.sort(order[size:])
    return images[train], labels[train], images[val], labels[val]
