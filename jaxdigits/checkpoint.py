"""Checkpoints with orbax: the last few epochs in `checkpoints/`, the best one in `best/`.

Each checkpoint holds the train state (step, params, optimizer state) and a JSON item with the
config, the epoch, the metrics history, the input normalisation and a SHA-256 digest of the state
and of the parameters alone, so a checkpoint alone is enough to evaluate, export or resume, and
every load checks that what it read is what was saved: a damaged checkpoint (flipped bytes,
a truncated or missing file) is refused with `Damaged`, one sentence naming it.

Orbax writes into a temporary folder and renames it when complete, so a killed run never
leaves a half-written checkpoint under a real step number. A kill between writing
`checkpoints/N` and `best/N` is repaired from the run's own history by `repair_best`.
"""

import hashlib
import importlib.util
import pathlib
import shutil
import sys

import jax
import numpy as np

from jaxdigits.errors import UserError


def lazy_module(name: str):
    """Module `name`, run at the first use of one of its attributes rather than here
    (importlib's LazyLoader recipe); an already imported module is returned as it is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


# Orbax takes 0.3 s to import, which every command paid before its first line of work; it is
# now imported at its first use: `preload`, which a `Checkpointer` calls (a run makes its
# Checkpointer while its programs compile), or any read.
ocp = lazy_module("orbax.checkpoint")


def preload() -> None:
    """Imports orbax now rather than at its first use."""
    ocp.CheckpointManager  # noqa: B018 (the attribute access runs the module)


class Damaged(UserError):
    """A checkpoint that cannot be read back as it was written; `path` is its folder."""

    def __init__(self, message: str, path):
        super().__init__(message)
        self.path = pathlib.Path(path).absolute()


def _manager(directory: pathlib.Path, keep: int) -> "ocp.CheckpointManager":
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def digest(tree) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, in the order of the paths.

    Paths are written plainly ("opt_state/0/mu/Dense_0/bias"), so a state and the nested dicts
    orbax reads back without a target give the same digest."""
    h = hashlib.sha256()
    leaves = [(jax.tree_util.keystr(path, simple=True, separator="/"), leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
    for path, leaf in sorted(leaves, key=lambda item: item[0]):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)  # Replicated over hosts: this host's copy.
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{path}:{array.dtype.str}:{array.shape};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


class Checkpointer:
    """Saves a checkpoint per epoch (keeping `keep`) and the best by validation accuracy."""

    def __init__(self, workdir, keep: int = 3):
        preload()
        self._workdir, self._keep = pathlib.Path(workdir), keep
        self._managers = None  # Made at the first save: a finished run re-scored writes nothing.

    def save(self, epoch: int, state, meta: dict, is_best: bool) -> None:
        if self._managers is None:
            self._managers = (_manager(self._workdir / "checkpoints", self._keep),
                              _manager(self._workdir / "best", 1))
        digests = {"state": digest(state)}
        if hasattr(state, "params"):
            digests["params"] = digest(state.params)
        meta = {**meta, "digest": digests}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        latest, best = self._managers
        latest.save(epoch, args=args)
        if is_best:
            best.save(epoch, args=args)

    def close(self) -> None:
        for manager in self._managers or ():
            manager.close()


def saved_epochs(folder) -> list[int]:
    """The epochs with a complete checkpoint in `folder` (orbax names unfinished ones otherwise)."""
    folder = pathlib.Path(folder)
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def find(path, which: str = "latest") -> tuple[pathlib.Path, int]:
    """(checkpoint folder, epoch) for a workdir (its `which` checkpoint) or a checkpoint folder."""
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    if path.name.isdigit() and ((path / "state").exists() or (path / "meta").exists()):
        return path.parent, int(path.name)  # A checkpoint folder itself.
    sub = {"latest": "checkpoints", "best": "best"}[which]
    folder = path / sub
    steps = saved_epochs(folder)
    if not steps:
        raise UserError(f"{path} holds no jaxdigits checkpoint (no {sub}/ with a saved epoch); "
                        "pass a run's --workdir or a checkpoint folder.")
    return folder, steps[-1]


def _read(folder: pathlib.Path, epoch: int, **items) -> dict:
    """Orbax's restore of `items` from `folder/epoch`, any failure to read reported as `Damaged`."""
    path = (pathlib.Path(folder) / str(epoch)).absolute()
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as reader:
            return reader.restore(path, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax and tensorstore raise many types for one cause: bad bytes.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise Damaged(f"the checkpoint {path} is damaged and cannot be read ({reason}).",
                      path) from None


def read_meta(folder: pathlib.Path, epoch: int) -> dict:
    """The checkpoint's JSON item as saved (its digest left out)."""
    meta = dict(_read_meta(folder, epoch))
    meta.pop("digest", None)
    return meta


def _read_meta(folder: pathlib.Path, epoch: int) -> dict:
    return _checked(folder, epoch, _read(folder, epoch, meta=ocp.args.JsonRestore())["meta"])


def _read_state(folder: pathlib.Path, epoch: int, state_args) -> tuple[dict, object]:
    """(meta, state) in one read: the JSON item, digest included, and the state `state_args` ask."""
    restored = _read(folder, epoch, meta=ocp.args.JsonRestore(), state=state_args)
    return _checked(folder, epoch, restored["meta"]), restored["state"]


def _checked(folder, epoch: int, meta) -> dict:
    if not isinstance(meta, dict):
        raise Damaged(f"the checkpoint {pathlib.Path(folder) / str(epoch)} is damaged: its metadata "
                      "is not a JSON object.", pathlib.Path(folder) / str(epoch))
    return meta


def _verify(folder, epoch: int, meta: dict, key: str, tree) -> None:
    """Checks `tree` against the digest saved under `key` (checkpoints older than digests pass)."""
    saved = (meta.get("digest") or {}).get(key)
    if saved is not None and saved != digest(tree):
        raise Damaged(f"the checkpoint {pathlib.Path(folder).absolute() / str(epoch)} is damaged: "
                      f"its {'parameters' if key == 'params' else 'train state'} do not match the "
                      "digest saved with them.", pathlib.Path(folder) / str(epoch))


def verify(folder: pathlib.Path, epoch: int) -> None:
    """Reads a whole checkpoint back, with no model at hand, and checks it against its digest."""
    meta, state = _read_state(folder, epoch, ocp.args.StandardRestore())
    _verify(folder, epoch, meta, "state", state)


def restore(folder: pathlib.Path, epoch: int, target) -> tuple[object, dict]:
    """Restores (state, meta), verified; `target` is a state of the same structure."""
    meta, state = _read_state(folder, epoch, ocp.args.StandardRestore(target))
    _verify(folder, epoch, meta, "state", state)
    meta.pop("digest", None)
    # Orbax commits each array to its device, which jit's cache tells apart from a fresh state:
    # the train step compiled twice more after every resume. Placed as a fresh state is instead.
    state = jax.tree.map(lambda x: jax.device_put(np.asarray(x))
                         if isinstance(x, jax.Array) and x.is_fully_addressable else x, state)
    return state, meta


def restore_params(folder: pathlib.Path, epoch: int, target) -> tuple[object, dict]:
    """Restores (params, meta) alone, verified; `target` is params of the same structure.

    The optimizer state stays on disk, so a run trained with any optimizer (one registered by a
    plug-in that this process never loaded, too) can be evaluated or exported.
    """
    state = {"params": target}
    args = ocp.args.PyTreeRestore(state, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(state))
    try:
        meta, state = _read_state(folder, epoch, args)
    except Damaged:  # Orbax refuses a target that does not fit; read what is there to tell.
        meta, state = _read_state(folder, epoch, ocp.args.StandardRestore())
    params = state["params"]
    if _shapes(params) != _shapes(target):
        raise UserError(f"the parameters in {pathlib.Path(folder) / str(epoch)} do not fit the "
                        "model its config describes (their names, shapes or dtypes differ).")
    _verify(folder, epoch, meta, "params", params)
    meta.pop("digest", None)
    return params, meta


def _shapes(tree) -> list:
    return [(jax.tree_util.keystr(path), tuple(leaf.shape), np.dtype(leaf.dtype))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def best_epoch(history: list[dict], score) -> int | None:
    """The epoch `best/` must hold: the first with the highest `score`, None before any."""
    if not history:
        return None
    scores = [score(r) for r in history]
    return history[scores.index(max(scores))]["epoch"]


def repair_best(workdir, history: list[dict], score, log) -> None:
    """Makes `best/` hold exactly the history's best epoch, copying it from `checkpoints/`.

    A run killed after writing `checkpoints/N` and before `best/N` (or resumed from an epoch
    before a damaged one) leaves `best/` behind its history; this puts it right."""
    workdir = pathlib.Path(workdir)
    want, best = best_epoch(history, score), workdir / "best"
    have = saved_epochs(best)
    if want in have:
        try:
            verify(best, want)
        except Damaged as e:
            log(f"warning: {e} It is moved to {set_aside(best, want, workdir)}.")
            have.remove(want)
    if have == ([] if want is None else [want]):
        return
    if want is not None and want not in have:
        source = workdir / "checkpoints" / str(want)
        if not source.is_dir():
            log(f"warning: best/ cannot be rebuilt: epoch {want}'s checkpoint is gone.")
            return
        best.mkdir(exist_ok=True)
        tmp = best / f".{want}.copy"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        tmp.rename(best / str(want))
        log(f"Repaired {best}: it now holds epoch {want}, the best of the run's history.")
    for epoch in have:
        if epoch != want:
            shutil.rmtree(best / str(epoch))


def set_aside(folder, epoch: int, workdir) -> pathlib.Path:
    """Moves a damaged checkpoint out of the run's checkpoints into `workdir/damaged/`."""
    target = pathlib.Path(workdir) / "damaged" / f"{pathlib.Path(folder).name}-{epoch}"
    n = 1
    while target.exists():
        target, n = target.with_name(f"{pathlib.Path(folder).name}-{epoch}.{n}"), n + 1
    target.parent.mkdir(exist_ok=True)
    (pathlib.Path(folder) / str(epoch)).rename(target)
    return target


def drop_after(folder, epoch: int) -> None:
    """Deletes the checkpoints in `folder` newer than `epoch` (a resume from `epoch` rewrites them)."""
    for e in saved_epochs(folder):
        if e > epoch:
            shutil.rmtree(pathlib.Path(folder) / str(e))
