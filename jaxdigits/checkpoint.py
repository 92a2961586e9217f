"""Checkpoints with orbax: the last few epochs in `checkpoints/`, the best one in `best/`.

Each checkpoint holds the train state (step, params, optimizer state) and a JSON item with the
config, the epoch, the metrics history and the input normalisation, so a checkpoint alone is
enough to evaluate, export or resume. Orbax writes into a temporary folder and renames it when
complete, so a killed run never leaves a half-written checkpoint under a real step number.
"""

import pathlib

import orbax.checkpoint as ocp

from jaxdigits.errors import UserError


def _manager(directory: pathlib.Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpointer:
    """Saves a checkpoint per epoch (keeping `keep`) and the best by validation accuracy."""

    def __init__(self, workdir, keep: int = 3):
        workdir = pathlib.Path(workdir)
        self._latest = _manager(workdir / "checkpoints", keep)
        self._best = _manager(workdir / "best", 1)

    def save(self, epoch: int, state, meta: dict, is_best: bool) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._latest.save(epoch, args=args)
        if is_best:
            self._best.save(epoch, args=args)

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def saved_epochs(folder) -> list[int]:
    """The epochs with a complete checkpoint in `folder` (orbax names unfinished ones otherwise)."""
    folder = pathlib.Path(folder)
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def find(path, which: str = "latest") -> tuple[pathlib.Path, int]:
    """(checkpoint folder, epoch) for a workdir (its `which` checkpoint) or a checkpoint folder."""
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    if (path / "state").is_dir() and (path / "meta").exists():  # A checkpoint folder itself.
        return path.parent, int(path.name)
    sub = {"latest": "checkpoints", "best": "best"}[which]
    folder = path / sub
    steps = saved_epochs(folder)
    if not steps:
        raise UserError(f"{path} holds no jaxdigits checkpoint (no {sub}/ with a saved epoch); "
                        "pass a run's --workdir or a checkpoint folder.")
    return folder, steps[-1]


def read_meta(folder: pathlib.Path, epoch: int) -> dict:
    with _manager(folder, 1, read_only=True) as manager:
        return manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(folder: pathlib.Path, epoch: int, target) -> tuple[object, dict]:
    """Restores (state, meta); `target` is a state of the same structure (e.g. freshly initialised)."""
    with _manager(folder, 1, read_only=True) as manager:
        restored = manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]


def restore_params(folder: pathlib.Path, epoch: int, target) -> tuple[object, dict]:
    """Restores (params, meta) alone; `target` is params of the same structure.

    The optimizer state stays on disk, so a run trained with any optimizer (one registered by a
    plug-in that this process never loaded, too) can be evaluated or exported.
    """
    state = {"params": target}
    restore = ocp.args.PyTreeRestore(state, partial_restore=True,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(state))
    try:
        with _manager(folder, 1, read_only=True) as manager:
            restored = manager.restore(epoch, args=ocp.args.Composite(
                state=restore, meta=ocp.args.JsonRestore()))
    except ValueError as e:
        raise UserError(f"the parameters in {folder / str(epoch)} do not fit the model its config "
                        f"describes ({str(e).splitlines()[0]}).") from None
    return restored["state"]["params"], restored["meta"]
