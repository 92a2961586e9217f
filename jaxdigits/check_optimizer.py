"""The conformance kit: does an optimizer keep optax's contract, and does it optimize?

    python -m jaxdigits.check_optimizer examples/lion.py:lion --optimizer_args=b1=0.9
    python -m jaxdigits.check_optimizer scratch_adam          # a registered name
    python -m jaxdigits.check_optimizer my_module:my_factory --learning_rate=3e-4

In a test: `assert check_optimizer.check(optax.adam).passed` (any `make(learning_rate) -> tx`).
Prints one line per item, PASS or FAIL with the reason, and exits 1 if any item fails. Items:
it builds the way training builds it (on a schedule; a factory that takes the rate as a number
is fed the schedule's value each step, one that cannot be fails here as in training), updates
shaped like the parameters, purity, jit without recompiling, a stable state, dtypes (float32 and
bfloat16), a declared state dtype (`*_dtype` arguments) kept, extra keyword arguments,
`optax.inject_hyperparams`, gradient accumulation (`optax.MultiSteps`) equal to a step on the
mean gradient, convergence on a quadratic bowl and on Rosenbrock's function, and training a
linear model on a real MNIST subset above a floor. The learning rate of the last three is the
first of LEARNING_RATES (or `--learning_rate`) that passes. `--skip` names items not to run.
"""

import inspect
import math
from typing import Callable, NamedTuple

from jaxdigits import conformance as checks
from jaxdigits import convergence, optimizers, plugin
from jaxdigits.contract import first_line
from jaxdigits.config import Config
from jaxdigits.errors import UserError

LEARNING_RATES = (0.1, 0.03, 0.01, 3e-3, 1e-3)
ITEMS = ("updates", "pure", "jit", "state", "dtypes", "state_dtype", "extra_kwargs",
         "inject_hyperparams", "multi_steps", "quadratic", "rosenbrock", "mnist")


class Item(NamedTuple):
    name: str
    passed: bool
    reason: str


class Report(NamedTuple):
    items: list

    @property
    def passed(self) -> bool:
        return all(item.passed for item in self.items)

    def __str__(self) -> str:
        lines = [f"{'PASS' if i.passed else 'FAIL'}  {i.name:<18} {i.reason}" for i in self.items]
        failed = sum(not i.passed for i in self.items)
        lines.append(f"{len(self.items) - failed}/{len(self.items)} items passed.")
        return "\n".join(lines)


def make_maker(optimizer, optimizer_args: str = "") -> tuple[Callable, str, tuple]:
    """(`make(learning_rate, **kwargs) -> tx`, its name, its `*_dtype` arguments) from a
    registered name, a 'module:factory' spec or a callable, not yet adapted to schedules."""
    if callable(optimizer):
        return optimizer, getattr(optimizer, "__name__", repr(optimizer)), _dtype_args(optimizer)
    if plugin.is_spec(optimizer):
        make = plugin.plugin_maker(optimizer, optimizer_args, ready=False)  # Loaded and checked once.
        return make, optimizer, _dtype_args(make.factory)
    config = Config(optimizer=optimizer, optimizer_args=optimizer_args)
    optimizers.make_optimizer(config, 1)  # Unknown names and misplaced arguments: one sentence.
    return lambda learning_rate: optimizers.make_optimizer(config, 1, schedule=learning_rate), optimizer, ()


def _dtype_args(factory) -> tuple:
    try:
        return tuple(n for n in inspect.signature(factory).parameters if n.endswith("_dtype"))
    except (TypeError, ValueError):
        return ()


def builds(make, name: str):
    """(tx, Item): the optimizer built as training builds it, on a schedule (`plugin.schedule_ready`)."""
    try:
        ready = plugin.schedule_ready(make, name)
        tx = make(0.01)
    except Exception as e:  # A UserError saying how to fix it, or the user's code failing.
        return None, Item("builds", False, str(e) if isinstance(e, UserError) else first_line(e))
    if getattr(ready, "fed_each_step", False):
        return tx, Item("builds", True, "takes learning_rate as a number; training feeds it the "
                                        "schedule's value at each step (optax.inject_hyperparams)")
    return tx, Item("builds", True, "takes training's schedule as learning_rate")


def check(optimizer, *, optimizer_args: str = "", learning_rate: float | None = None,
          mnist=None, skip: tuple = ()) -> Report:
    """Runs every item (except those named in `skip`) and returns the report; never raises for
    a failing item. `mnist` is a loaded `data.Dataset` (default: the bundled MNIST)."""
    unknown = sorted(set(skip) - set(ITEMS))
    if unknown:
        raise UserError(f"--skip names no item {', '.join(map(repr, unknown))}; the items are "
                        f"{', '.join(ITEMS)}.")
    make, name, dtype_args = make_maker(optimizer, optimizer_args)
    rates = (learning_rate,) if learning_rate else LEARNING_RATES
    tx, item = builds(make, name)
    if tx is None:
        return Report([item])
    items = [item]
    runs = {
        "updates": lambda: checks.updates_match(tx),
        "pure": lambda: checks.pure(tx),
        "jit": lambda: checks.jits_once(tx),
        "state": lambda: checks.state_stable(tx),
        "dtypes": lambda: checks.dtypes(tx),
        "state_dtype": lambda: checks.state_dtype(make, dtype_args),
        "extra_kwargs": lambda: checks.extra_kwargs(tx),
        "inject_hyperparams": lambda: checks.inject_hyperparams(make),
        "multi_steps": lambda: checks.multi_steps(tx),
        "quadratic": lambda: convergence.first_rate(convergence.QUADRATIC, make, rates),
        "rosenbrock": lambda: convergence.first_rate(convergence.ROSENBROCK, make, rates),
        "mnist": lambda: convergence.first_rate(convergence.mnist_problem(mnist), make, rates),
    }
    for item_name in ITEMS:
        if item_name in skip:
            continue
        try:
            items.append(Item(item_name, True, runs[item_name]()))
        except checks.Failed as e:
            items.append(Item(item_name, False, str(e)))
        except Exception as e:  # The optimizer under test crashed: that is this item's failure.
            items.append(Item(item_name, False, f"raised {type(e).__name__}: {first_line(e)}"))
    return Report(items)


def main(argv):
    from absl import flags, logging

    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.WARNING)
    if len(argv) != 2:
        raise UserError("pass one optimizer: a registered name (adam), module:factory or "
                        "path/to/file.py:factory.")
    rate = FLAGS.learning_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise UserError(f"--learning_rate must be a positive finite number, got {rate}.")
    report = check(argv[1], optimizer_args=FLAGS.optimizer_args,
                   learning_rate=FLAGS.learning_rate, skip=tuple(FLAGS.skip))
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    from absl import app, flags

    from jaxdigits.errors import report_user_errors

    flags.DEFINE_string("optimizer_args", "", "Arguments of the factory, 'name=value,...'.")
    flags.DEFINE_float("learning_rate", None, "Use this learning rate only (default: the first of "
                       f"{', '.join(map(str, LEARNING_RATES))} that passes each convergence item).")
    flags.DEFINE_list("skip", [], "Items not to run, e.g. mnist.")
    app.run(report_user_errors(main))
