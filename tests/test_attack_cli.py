"""Attacks on the command line: every entry point fed the values a careless or hostile user passes.

Negative, zero, huge and non-finite numbers, unknown and empty names, paths that are files, are
missing, sit under a file, are read-only or are not UTF-8, stray arguments. Every case must end
with a non-zero exit, exactly one line on stderr (`error: ...`, never a traceback), and nothing
created or changed on disk: each case gets its own folder (a file `afile`, an empty folder
`empty`), compared before and after, and the trained run the cases read is compared too.

The cases of one program run in one process (`run_cli_cases`: a Python start with jax costs
seconds).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

from conftest import ROOT, run_cli_cases

SMALL = ["--model=linear", "--epochs=1", "--max_train_examples=512", "--validation_size=100",
         "--quiet"]
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff")  # Latin-1 bytes: not a valid UTF-8 file name.


# name: arguments. Placeholders: {case} the case's own folder, {file} a file in it,
# {empty} an empty folder in it, {ro} a place no one can write, {run} the trained run.
# "{ro}/jaxdigits-attack" is the one name used there, checked absent after the cases.
TRAIN = {
    "epochs_zero": ["--epochs=0"],
    "epochs_nan": ["--epochs=nan"],
    "unknown_flag": ["--bogus=1"],
    "stray_argument": ["extra"],
    "learning_rate_nan": ["--learning_rate=nan"],
    "learning_rate_negative": ["--learning_rate=-1"],
    "learning_rate_inf": ["--learning_rate=inf"],
    "momentum_nan": ["--momentum=nan"],
    "b2_inf": ["--b2=inf"],
    "weight_decay_nan": ["--weight_decay=nan", "--optimizer=adamw"],
    "grad_clip_negative": ["--grad_clip=-1"],
    "seed_huge": ["--seed=99999999999999999999"],
    "dropout_nan": ["--dropout=nan"],
    "batch_negative": ["--batch_size=-5"],
    "eval_batch_zero": ["--eval_batch_size=0"],
    "hidden_zero": ["--hidden=0"],
    "hidden_text": ["--hidden=a"],
    "warmup_nan": ["--warmup_epochs=nan"],
    "rotate_nan": ["--augment_rotate=nan"],
    "num_models_zero": ["--num_models=0"],
    "keep_checkpoints_negative": ["--keep_checkpoints=-1"],
    "devices_negative": ["--devices=-1"],
    "model_empty": ["--model="],
    "dataset_empty": ["--dataset="],
    "optimizer_empty": ["--optimizer="],
    "schedule_empty": ["--schedule="],
    "sweep_unknown": ["--sweep=depth=1,2"],
    "recipe_unknown": ["--recipe=fastest"],
    "workdir_is_file": ["--workdir={file}"],
    "workdir_under_file": ["--workdir={file}/run"],
    "workdir_read_only": ["--workdir={ro}/jaxdigits-attack"],
    "data_dir_missing": ["--data_dir={case}/missing"],
    "data_dir_is_file": ["--data_dir={file}"],
    "data_dir_empty_folder": ["--data_dir={empty}"],
    "data_dir_empty_string": ["--data_dir="],
    "data_dir_non_utf8": [f"--data_dir={{case}}/{NON_UTF8}"],
}
EVALUATE = {
    "no_run": [],
    "workdir_empty": ["--workdir="],
    "workdir_missing": ["--workdir={case}/missing"],
    "workdir_is_file": ["--workdir={file}"],
    "workdir_not_a_run": ["--workdir={empty}"],
    "workdir_non_utf8": [f"--workdir={{case}}/{NON_UTF8}"],
    "workdir_and_checkpoint": ["--workdir={run}", "--checkpoint={run}/best/1"],
    "empty_entry": ["--workdir={run},"],
    "only_commas": ["--workdir=,"],
    "which_unknown": ["--workdir={run}", "--which=first"],
    "split_unknown": ["--workdir={run}", "--split=train"],
    "worst_k_nan": ["--workdir={run}", "--worst_k=nan"],
    "worst_k_zero": ["--workdir={run}", "--worst_k=0"],
    "worst_k_huge": ["--workdir={run}", "--worst_k=100000000"],
    "num_samples_negative": ["--workdir={run}", "--num_samples=-1"],
    "num_samples_huge": ["--workdir={run}", "--num_samples=100000000"],
    "sample_class_unknown": ["--workdir={run}", "--sample_class=banana"],
    "sample_class_empty": ["--workdir={run}", "--sample_class="],
    "report_dir_empty": ["--workdir={run}", "--report_dir="],
    "report_dir_is_file": ["--workdir={run}", "--report_dir={file}"],
    "report_dir_under_file": ["--workdir={run}", "--report_dir={file}/report"],
    "report_dir_read_only": ["--workdir={run}", "--report_dir={ro}/jaxdigits-attack"],
    "data_dir_missing": ["--workdir={run}", "--data_dir={case}/missing"],
    "data_dir_empty_folder": ["--workdir={run}", "--data_dir={empty}"],
    "data_dir_is_file": ["--workdir={run}", "--data_dir={file}"],
}
EXPORT = {
    "no_out": ["--workdir={run}"],
    "out_is_file": ["--workdir={run}", "--out={file}"],
    "out_under_file": ["--workdir={run}", "--out={file}/model"],
    "out_read_only": ["--workdir={run}", "--out={ro}/jaxdigits-attack"],
    "platform_unknown": ["--workdir={run}", "--out={case}/model", "--platforms=abacus"],
    "workdir_missing": ["--workdir={case}/missing", "--out={case}/model"],
    "data_dir_missing": ["--workdir={run}", "--out={case}/model", "--data_dir={case}/missing"],
}
BENCHMARK = {
    "calls_zero": ["--calls=0"],
    "calls_negative": ["--calls=-1"],
    "repeats_negative": ["--repeats=-1"],
    "bench_epochs_negative": ["--bench_epochs=-1"],
    "model_unknown": ["--model=resnet"],
    "batch_zero": ["--batch_size=0"],
    "calls_nan": ["--calls=nan"],
    "out_is_folder": ["--out={empty}"],
    "out_under_file": ["--out={file}/bench.json"],
    "data_dir_missing": ["--data_dir={case}/missing"],
}
PROGRAMS = {  # name: (module, define, cases, arguments every case starts with)
    "train": ("jaxdigits.train", "jaxdigits.cli:define_train_flags", TRAIN, SMALL),
    "evaluate": ("jaxdigits.evaluate", "jaxdigits.evaluate:define_flags", EVALUATE, []),
    "export": ("jaxdigits.export", "jaxdigits.export:define_flags", EXPORT, []),
    "benchmark": ("jaxdigits.benchmark", "jaxdigits.benchmark:define_flags", BENCHMARK,
                  ["--model=linear", "--max_train_examples=512", "--calls=1", "--repeats=1"]),
}


def snapshot(folder: pathlib.Path) -> dict:
    """{path: [kind, mode, size, mtime_ns, sha256]} of everything under `folder`, itself too."""
    out = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(folder))] = [path.is_dir(), st.st_mode, st.st_size,
                                              st.st_mtime_ns, digest]
    return out


def read_only_place(tmp: pathlib.Path) -> pathlib.Path:
    """A folder no one can write into: chmod 0o500 for a normal user; as root (whom chmod does
    not stop) /sys, where even root cannot make a folder. Checked, not assumed."""
    if os.geteuid() != 0:
        place = tmp / "read-only"
        place.mkdir()
        place.chmod(0o500)
    else:
        place = pathlib.Path("/sys")
    with pytest.raises(OSError):
        (place / "jaxdigits-attack-probe").mkdir()
    return place


def train_run(workdir: pathlib.Path) -> pathlib.Path:
    """The run the evaluate and export cases read: a linear model, one epoch on 512 images."""
    from jaxdigits import train
    from jaxdigits.config import Config

    if not (workdir / "results.json").exists():
        train.train_and_evaluate(Config(model="linear", epochs=1, max_train_examples=512,
                                        validation_size=100), workdir, quiet=True,
                                 allow_download=False)
    return workdir


@contextlib.contextmanager
def locked(path: pathlib.Path):
    """An exclusive lock on `path` across processes (the test session's xdist workers)."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def run_attacks(program: str, tmp: pathlib.Path, run: pathlib.Path | None) -> dict:
    """Every case of `program` in one process: {name: (result, folder before, folder after)}."""
    module, define, cases, base = PROGRAMS[program]
    tmp.mkdir()
    ro = read_only_place(tmp)
    prepared = {}
    for name, args in cases.items():
        case = tmp / name
        case.mkdir()
        (case / "afile").write_text("a file, not a folder")
        (case / "empty").mkdir()
        fill = dict(case=case, file=case / "afile", empty=case / "empty", ro=ro, run=run)
        args = [a.format(**fill) for a in args]
        if program == "train" and not any(a.startswith("--workdir") for a in args):
            args.append(f"--workdir={case}/run")
        prepared[name] = ([*base, *args], snapshot(case))
    env = {"JAXDIGITS_CACHE_DIR": str(tmp / "cache")}  # An empty cache: no download is found.
    results = run_cli_cases(module, define, [(args, env) for args, _ in prepared.values()])
    assert not (ro / "jaxdigits-attack").exists()
    return {name: (result, before, snapshot(tmp / name))
            for (name, (_, before)), result in zip(prepared.items(), results)}


def assert_refused(result, before: dict, after: dict) -> None:
    """Non-zero exit, one line on stderr (the error), no traceback, the case's folder as it was."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr[-2000:] + result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"


@pytest.fixture(scope="session")
def attacked(tmp_path_factory):
    """program -> {name: (result, folder before, folder after)}: each program's cases run once per
    test session, by whichever xdist worker asks first (the others wait and read its results), so
    cases of one program spread over both workers do not run twice."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # This session's folder, shared by its workers.
    shared = root / "attack-cli"
    shared.mkdir(exist_ok=True)

    def get(program):
        results = shared / f"{program}.json"
        with locked(shared / f"{program}.lock"):
            if not results.exists():
                with locked(shared / "run.lock"):
                    run = train_run(shared / "run")
                before = snapshot(run)
                out = run_attacks(program, shared / program, run)
                assert snapshot(run) == before, "a case changed the run it read"
                results.write_text(json.dumps({n: (vars(r), b, a) for n, (r, b, a) in out.items()}))
        return {name: (types.SimpleNamespace(**r), before, after)
                for name, (r, before, after) in json.loads(results.read_text()).items()}

    return get


def _params(program: str):
    return [pytest.param(program, name, id=f"{program}-{name}") for name in PROGRAMS[program][2]]


@pytest.mark.slow
@pytest.mark.parametrize("program, name", [p for name in PROGRAMS for p in _params(name)])
def test_bad_command_line_is_refused_cleanly(attacked, program, name):
    assert_refused(*attacked(program)[name])


def _subprocess(args, tmp: pathlib.Path, timeout=120):
    """`python -m ARGS` from the repository, with an empty dataset cache under `tmp`."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXDIGITS_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


# Programs whose flags are defined under their `__main__` (no define function for run_cli_cases)
# and the non-UTF-8 --workdir (it once crashed orbax's writer thread): one process each.
SINGLE = {
    "serve_port_text": ["jaxdigits.serve", "--port=abc"],
    "serve_model_is_file": ["jaxdigits.serve", "--model={file}"],
    "check_optimizer_nothing": ["jaxdigits.check_optimizer"],
    "check_optimizer_learning_rate_nan": [
        "jaxdigits.check_optimizer", "adam", "--learning_rate=nan", "--skip=pure,jit,state,"
        "dtypes,state_dtype,extra_kwargs,inject_hyperparams,multi_steps,quadratic,rosenbrock,"
        "mnist"],
    "train_workdir_non_utf8": ["jaxdigits.train", *SMALL, f"--workdir={{case}}/{NON_UTF8}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SINGLE))
def test_bad_command_line_is_refused_cleanly_alone(tmp_path, name):
    case = tmp_path / "case"
    case.mkdir()
    (case / "afile").write_text("a file, not a folder")
    args = [a.format(case=case, file=case / "afile") for a in SINGLE[name]]
    before = snapshot(case)
    assert_refused(_subprocess(args, tmp_path), before, snapshot(case))


def test_an_output_folder_is_checked_without_creating_anything(tmp_path, monkeypatch):
    from jaxdigits.errors import UserError, check_writable_folder

    (tmp_path / "afile").write_text("a file")
    assert check_writable_folder(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    for path, message in [("", "--out is empty"),
                          (tmp_path / "afile", f"--out={tmp_path}/afile is a file, not a folder."),
                          (tmp_path / "afile" / "x",
                           f"--out={tmp_path}/afile/x cannot be created: {tmp_path}/afile is a file.")]:
        with pytest.raises(UserError, match=f"^{message}"):
            check_writable_folder(path, "--out")
    # Root passes os.access everywhere, so a read-only place is what os.access says it is.
    monkeypatch.setattr(os, "access", lambda path, mode: pathlib.Path(path) != tmp_path)
    with pytest.raises(UserError, match=f"cannot be written: {tmp_path} is read-only"):
        check_writable_folder(tmp_path / "report", "--report_dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # Nothing was created.
