"""Your own optimizer: `--optimizer=MODULE:FACTORY` or `--optimizer=path/to/file.py:FACTORY`.

    python -m jaxdigits.train --model=linear --optimizer=my_optim:lion --optimizer_args='b1=0.9,b2=0.99'

FACTORY is any function returning an `optax.GradientTransformation`. Its arguments come from
`--optimizer_args` ('name=value,...'), each converted to the type its annotation (or, without
one, its default) names: int, float, bool (true/false), str, or None ('none', where allowed).
The learning rate: a factory with a `learning_rate` parameter receives the run's schedule there
(`--learning_rate` and `--schedule`, a callable of the step, as optax's own factories accept);
a factory without one is taken to emit a descent direction (like `optax.scale_by_adam`) and is
chained with `optax.scale_by_learning_rate(schedule)`. A factory that treats the rate as a number
is fed the schedule's value at each step through `optax.inject_hyperparams` (`schedule_ready`). The spec and the arguments are saved in
the run's config, so `evaluate` and `--resume` rebuild the same optimizer; a relative file path
is resolved from the directory those commands are run in. Every mistake is one `UserError`.
"""

import ast
import importlib
import importlib.util
import inspect
import pathlib
import sys
import types
import typing

import jax
import jax.numpy as jnp
import optax

from jaxdigits import contract
from jaxdigits.errors import UserError


def is_spec(name: str) -> bool:
    """True for 'module:factory' or 'file.py:factory', False for a registered name like 'adam'."""
    return ":" in name


def load_factory(spec: str):
    """The function named by 'module.path:factory' or 'path/to/file.py:factory'."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UserError(f"--optimizer={spec!r} is not of the form module:factory or file.py:factory.")
    if target.endswith(".py"):
        path = pathlib.Path(target)
        if not path.is_file():
            raise UserError(f"optimizer file {target} does not exist.")
        name = f"jaxdigits_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # So pickling and dataclasses inside it work.
        load = lambda: module_spec.loader.exec_module(module)
    else:
        module = None
        load = lambda: importlib.import_module(target)
    try:
        module = load() or module
    except ModuleNotFoundError as e:
        if e.name and (target == e.name or target.startswith(e.name + ".")):
            raise UserError(f"no module named {target!r} on the Python path (for --optimizer={spec}).") from None
        raise UserError(f"importing {target} failed: {type(e).__name__}: {e}.") from None
    except Exception as e:  # The user's code: any error it raises is reported in one line.
        raise UserError(f"importing {target} failed: {type(e).__name__}: {e}.") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{target} has no function {attr!r} (for --optimizer={spec}).")
    return factory


def _converters(annotation, default) -> list:
    """The types a command-line value may be read as, in the order tried."""
    if annotation is inspect.Parameter.empty:
        if isinstance(default, (bool, int, float, str)):
            return [type(default)] + ([float] if type(default) is int else [])
        return ["literal"]
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    found = [t for t in (type(None), bool, int, float, str) if t in args]
    if not found and any(a is typing.Any for a in args):
        return ["literal"]
    return found


def _convert(text: str, kinds: list):
    for kind in kinds:
        if kind is type(None) and text.lower() == "none":
            return None
        if kind is bool and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                continue
        if kind is str:
            return text
        if kind == "literal":
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
    return _NOT_CONVERTED


_NOT_CONVERTED = object()


def parse_args(factory, text: str, takes_schedule: bool) -> dict:
    """'b1=0.9,b2=0.99' -> {'b1': 0.9, 'b2': 0.99}, typed from `factory`'s signature."""
    name = getattr(factory, "__name__", repr(factory))
    params = inspect.signature(factory).parameters
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # Unresolvable string annotations: fall back to the defaults' types.
        hints = {}
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not key:
            raise UserError(f"--optimizer_args takes name=value pairs separated by commas, got {item!r}.")
        if key == "learning_rate" and takes_schedule:
            raise UserError(f"{name} gets its learning rate from --learning_rate and --schedule, "
                            "not from --optimizer_args.")
        param = params.get(key)
        if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if not open_kwargs:
                known = [p for p in params if p != "learning_rate" and params[p].kind not in
                         (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
                raise UserError(f"{name} takes no argument {key!r}; its arguments are "
                                f"{', '.join(known) or 'none'}.")
            kinds = ["literal"]
        else:
            kinds = _converters(hints.get(key, param.annotation), param.default)
            if not kinds:
                raise UserError(f"{name}'s argument {key!r} has a type ({param.annotation}) that "
                                "--optimizer_args cannot give; use int, float, bool or str.")
        converted = _convert(value, kinds)
        if converted is _NOT_CONVERTED:
            wanted = " or ".join(getattr(k, "__name__", str(k)) for k in kinds).replace("NoneType", "none")
            raise UserError(f"{name}'s argument {key}={value!r} is not a valid {wanted}.")
        args[key] = converted
    return args


def plugin_maker(spec: str, args_text: str = "", ready: bool = True):
    """`make(learning_rate, **overrides) -> GradientTransformation` for `spec` with `args_text`
    (`overrides` replace parsed arguments, as a race's trials do), checked once, as training
    calls it (`schedule_ready`; `ready=False` leaves that to the caller, as the kit does).
    `make.factory` is the user's function."""
    factory = load_factory(spec)
    try:
        takes_schedule = "learning_rate" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        raise UserError(f"cannot read the signature of {spec}; pass a plain Python function.") from None
    args = parse_args(factory, args_text, takes_schedule)
    try:
        inspect.signature(factory).bind(**({"learning_rate": None} if takes_schedule else {}), **args)
    except TypeError as e:
        raise UserError(f"{spec} cannot be called with {sorted(args) or 'no arguments'} ({e}); pass "
                        "the missing arguments with --optimizer_args.") from None

    def make(learning_rate, **overrides) -> optax.GradientTransformation:
        kwargs = {**args, **overrides}
        try:
            tx = factory(learning_rate=learning_rate, **kwargs) if takes_schedule else factory(**kwargs)
        except UserError:
            raise
        except Exception as e:  # The user's code.
            raise UserError(f"{spec}({args_text}) failed: {type(e).__name__}: {e}.") from None
        if not isinstance(tx, optax.GradientTransformation):
            raise UserError(f"{spec} returned a {type(tx).__name__}, not an "
                            "optax.GradientTransformation (init, update).")
        return tx if takes_schedule else optax.chain(tx, optax.scale_by_learning_rate(learning_rate))

    make.factory = factory
    if not ready:
        return make
    ready_make = schedule_ready(make, spec)
    # Fail here, in one sentence, not in the middle of a run: training's own check
    # (`contract.verify`) repeats this on the model's parameters.
    contract.verify(ready_make(_probe_schedule), _PROBE_PARAMS, spec)
    return ready_make


def make_plugin_optimizer(spec: str, args_text: str, learning_rate) -> optax.GradientTransformation:
    """The optimizer `spec` with `args_text`, on `learning_rate` (a float or a schedule)."""
    return plugin_maker(spec, args_text)(learning_rate)


def _probe_schedule(count):
    """A schedule as training passes one: a function of the step returning a float32 array."""
    del count  # Unused.
    return jnp.full([], 0.01, jnp.float32)

_PROBE_PARAMS = {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32), "b": jax.ShapeDtypeStruct((3,), jnp.float32)}


def _fault(make, learning_rate):
    """None if make(learning_rate) builds, inits and updates (traced on a small tree, not run),
    else the exception. Trees and shapes are the kit's items and `contract.verify`'s business."""
    try:
        tx = make(learning_rate)
        state = jax.eval_shape(tx.init, _PROBE_PARAMS)
        jax.eval_shape(tx.update, _PROBE_PARAMS, state, _PROBE_PARAMS)
        return None
    except Exception as e:  # The optimizer's code.
        return e


def schedule_ready(make, name: str):
    """`make(learning_rate, **kw)` made to take training's schedule as `learning_rate`.

    A factory that takes the schedule is returned as it is. One that treats the learning rate as
    a number (`-learning_rate * g`) is fed the schedule's value at each step through
    `optax.inject_hyperparams`; numbers still go to it directly. One that works with neither
    (it calls float() or branches on the rate) is refused here with a UserError saying how to
    fix it, so the kit and training refuse it alike, before any work.
    """
    error = _fault(make, _probe_schedule)
    if error is None:
        return make

    def fed(learning_rate, **kw):
        if not callable(learning_rate):
            return make(learning_rate, **kw)
        return optax.inject_hyperparams(lambda learning_rate: make(learning_rate, **kw))(
            learning_rate=learning_rate)

    if _fault(fed, _probe_schedule) is None:
        fed.fed_each_step = True  # What the kit reports.
        fed.factory = getattr(make, "factory", make)
        return fed
    if _fault(make, 0.01) is None:
        raise UserError(f"{name} takes its learning rate as a Python number only: given training's "
                        f"schedule it fails ({contract.first_line(error).rstrip('.')}), and under "
                        "optax.inject_hyperparams too; inside update read it as `lr = "
                        "learning_rate(count) if callable(learning_rate) else learning_rate`, or "
                        "use it in arithmetic only (no float(), no if on it).")
    if isinstance(error, UserError):
        raise error
    contract.verify(make(_probe_schedule), _PROBE_PARAMS, name)  # Names the fault in one sentence.
    raise UserError(f"{name} failed: {type(error).__name__}: {contract.first_line(error)}.")
