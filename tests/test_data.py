"""Data: IDX parsing, verification, the order of places, downloads, TFDS, the validation split."""

import gzip
import pathlib
import shutil

import numpy as np
import pytest

from conftest import BUNDLED
from jaxdigits import data
from jaxdigits.errors import UserError

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_bundled_mnist_is_the_real_thing(mnist):
    assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28, 1)
    assert mnist.train_labels.dtype == np.int32
    # Label counts published with the dataset (../shared/datasets/README.md).
    assert np.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                        6265, 5851, 5949]
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                       974, 1009]
    np.testing.assert_allclose(mnist.train_images.mean() / 255, 0.1307, atol=1e-4)


def _copy_mnist(folder: pathlib.Path, recompress=False):
    folder.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        src = BUNDLED / f"{stem}.gz"
        if recompress:  # Same payload, different gzip wrapping: must still verify.
            (folder / f"{stem}.gz").write_bytes(gzip.compress(gzip.decompress(src.read_bytes()), 1))
        else:
            shutil.copy(src, folder / f"{stem}.gz")
    return folder


def test_data_dir_comes_first_and_recompressed_copies_verify(tmp_path, no_env):
    folder = _copy_mnist(tmp_path / "mine", recompress=True)
    ds = data.load_dataset("mnist", str(folder), allow_download=False)
    assert ds.source == str(folder)
    assert ds.test_labels.shape == (10000,)


def test_env_var_comes_before_bundled(tmp_path, no_env, monkeypatch):
    folder = _copy_mnist(tmp_path / "env" / "mnist")  # A per-dataset sub-folder also works.
    monkeypatch.setenv("JAXDIGITS_DATA_DIR", str(tmp_path / "env"))
    assert data.load_dataset("mnist", allow_download=False).source == str(folder)


def test_uncompressed_files_work(tmp_path, no_env):
    folder = tmp_path / "raw"
    folder.mkdir()
    for stem in STEMS:
        (folder / stem).write_bytes(gzip.decompress((BUNDLED / f"{stem}.gz").read_bytes()))
    assert data.load_dataset("mnist", str(folder), allow_download=False).train_images.shape[0] == 60000


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:1000], "truncated"),
    (lambda raw: b"\x00\x00\x08\x04" + raw[4:], "wrong magic"),
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "does not match the registered SHA-256"),
])
def test_damaged_file_is_named(tmp_path, no_env, damage, message):
    folder = _copy_mnist(tmp_path / "bad")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
    with pytest.raises(UserError, match=message) as e:
        data.load_dataset("mnist", str(folder), allow_download=False)
    assert str(path) in str(e.value)


def test_corrupt_gzip_is_named(tmp_path, no_env):
    folder = _copy_mnist(tmp_path / "bad")
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])  # A cut-off download.
    with pytest.raises(UserError, match="not a readable gzip file") as e:
        data.load_dataset("mnist", str(folder), allow_download=False)
    assert str(path) in str(e.value)


def test_parse_idx_checks_header_and_length():
    good = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert data.parse_idx(good, "x").tolist() == [1, 2, 3]
    with pytest.raises(UserError, match="x holds 10 bytes"):
        data.parse_idx(good[:-1], "x")
    with pytest.raises(UserError, match="wrong magic"):
        data.parse_idx(b"\x1f\x8b\x08\x00", "x")
    with pytest.raises(UserError, match="ends inside its IDX header"):
        data.parse_idx(b"\x00\x00\x08\x03\x00", "x")


def test_shape_mismatch_is_named(tmp_path, no_env, monkeypatch):
    folder = _copy_mnist(tmp_path / "odd")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    short = raw[:4] + (9999).to_bytes(4, "big") + raw[8:-1]  # A valid IDX file of 9999 labels.
    labels.write_bytes(gzip.compress(short))
    spec = data.REGISTRY["mnist"]
    monkeypatch.setitem(spec.raw_sha256, "t10k-labels-idx1-ubyte", data.sha256(short))
    with pytest.raises(UserError, match="10000 images but .*9999 labels"):
        data.load_dataset("mnist", str(folder), allow_download=False)


def test_nothing_found_names_every_place(tmp_path, no_env, monkeypatch):
    monkeypatch.setattr(data, "_BUNDLED", tmp_path / "nothing")
    with pytest.raises(UserError) as e:
        data.load_dataset("mnist", allow_download=False)
    message = str(e.value)
    for place in ["bundled copy", "the cache", "no download", "--data_dir=FOLDER"]:
        assert place in message
    assert "\n" not in message


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "{d}/missing does not exist."),
    (lambda d: _touch(d / "afile"), "{d}/afile is a file, not a folder."),
    (lambda d: _mkdir(d / "empty"), "does not hold the mnist dataset: looked for "
                                    "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each .gz or "
                                    "uncompressed) in {d}/empty and in {d}/empty/mnist; pass"),
    (lambda d: _partial(d / "part"), "found only {d}/part/train-images-idx3-ubyte.gz"),
    (lambda d: _copy_mnist(d / "other" / "fashion_mnist").parent, "does not hold the mnist"),
    (lambda d: "", "--data_dir is empty"),
])
def test_an_explicit_data_dir_is_never_passed_over(tmp_path, no_env, make, message):
    """A --data_dir that is missing, a file, empty, incomplete or of another dataset stops the run
    in one sentence naming it, where it used to fall back silently to the bundled copy."""
    data_dir = make(tmp_path)
    with pytest.raises(UserError) as e:
        data.load_dataset("mnist", str(data_dir), allow_download=False)
    assert message.format(d=tmp_path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError):  # The cheap check alone says the same, before any loading.
        data.check_data_dir("mnist", str(data_dir))
    assert not (tmp_path / "cache").exists()  # Nothing downloaded, nothing written.


def test_data_dir_may_hold_the_files_in_a_dataset_sub_folder(tmp_path, no_env, monkeypatch):
    monkeypatch.setattr(data, "_BUNDLED", tmp_path / "nothing")  # Found there or nowhere.
    folder = _copy_mnist(tmp_path / "all" / "mnist")
    assert data.check_data_dir("mnist", str(tmp_path / "all")) == folder
    assert data.load_dataset("mnist", str(tmp_path / "all"), allow_download=False).source == str(folder)


def test_a_missing_env_folder_and_an_unreadable_file_are_one_sentence(tmp_path, no_env,
                                                                      monkeypatch):
    monkeypatch.setenv("JAXDIGITS_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(UserError, match=r"^\$JAXDIGITS_DATA_DIR=.*/typo does not exist\.$"):
        data.load_dataset("mnist", allow_download=False)
    monkeypatch.delenv("JAXDIGITS_DATA_DIR")
    folder = _copy_mnist(tmp_path / "mine")
    unreadable = folder / "t10k-labels-idx1-ubyte.gz"
    real_read = pathlib.Path.read_bytes

    def read_bytes(path):  # chmod 000 does not stop root, so the refusal is simulated.
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    with pytest.raises(UserError, match=f"^{unreadable} cannot be read \\(Permission denied\\)\\.$"):
        data.load_dataset("mnist", str(folder), allow_download=False)


def _touch(path: pathlib.Path) -> pathlib.Path:
    path.write_text("not a folder")
    return path


def _mkdir(path: pathlib.Path) -> pathlib.Path:
    path.mkdir()
    return path


def _partial(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    shutil.copy(BUNDLED / f"{STEMS[0]}.gz", folder)
    return folder


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError, match="choose one of mnist, fashion_mnist, kmnist or tfds:NAME"):
        data.load_dataset("cifar")


def _file_url_spec(tmp_path, monkeypatch, payload_dir):
    spec = data.REGISTRY["mnist"]
    monkeypatch.setitem(data.REGISTRY, "mnist", data.IdxSpec(
        "mnist", (payload_dir.as_uri() + "/",), spec.raw_sha256, spec.gz_sha256, spec.class_names))
    monkeypatch.setattr(data, "_BUNDLED", tmp_path / "nothing")


def test_download_is_verified_and_lands_in_the_cache(tmp_path, no_env, monkeypatch):
    _file_url_spec(tmp_path, monkeypatch, _copy_mnist(tmp_path / "mirror"))
    ds = data.load_dataset("mnist")
    cache = tmp_path / "cache" / "mnist"
    assert ds.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in STEMS)


def test_bad_download_leaves_no_file(tmp_path, no_env, monkeypatch):
    mirror = _copy_mnist(tmp_path / "mirror")
    path = mirror / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    _file_url_spec(tmp_path, monkeypatch, mirror)
    with pytest.raises(UserError, match="a download"):
        data.load_dataset("mnist")
    names = [p.name for p in (tmp_path / "cache" / "mnist").iterdir()]
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part.gz")]


def test_validation_split_is_deterministic_and_disjoint(mnist):
    x, y = mnist.train_images, mnist.train_labels
    ids = np.arange(len(x))
    a = data.split_validation(ids, y, 5000, seed=0)
    b = data.split_validation(ids, y, 5000, seed=0)
    c = data.split_validation(ids, y, 5000, seed=1)
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[2], c[2])
    assert len(a[0]) == 55000 and len(a[2]) == 5000
    assert not set(a[0]) & set(a[2])
    with pytest.raises(UserError, match="--validation_size=60000"):
        data.split_validation(ids, y, 60000, seed=0)


def test_tfds_mock_data_loads_into_the_same_arrays():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset("tfds:mnist")
    assert ds.train_images.shape == (12, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_labels.shape == (12,) and ds.test_labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.test_labels.max() < 10


def test_tfds_missing_dataset_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="tfds build mnist"):
        data.load_dataset("tfds:mnist", str(tmp_path))
    with pytest.raises(UserError, match=f"^--data_dir={tmp_path}/nothing does not exist\\.$"):
        data.load_dataset("tfds:mnist", str(tmp_path / "nothing"))
