"""The conformance kit: does an optimizer keep optax's contract, and does it optimize?

    python -m jaxdigits.check_optimizer examples/lion.py:lion --optimizer_args=b1=0.9
    python -m jaxdigits.check_optimizer scratch_adam          # a registered name
    python -m jaxdigits.check_optimizer my_module:my_factory --learning_rate=3e-4

In a test: `assert check_optimizer.check(optax.adam).passed` (any `make(learning_rate) -> tx`).
Prints one line per item, PASS or FAIL with the reason, and exits 1 if any item fails. Items:
purity, jit without recompiling, a stable state, dtypes (float32 and bfloat16), extra keyword
arguments, `optax.inject_hyperparams`, convergence on a quadratic bowl and on Rosenbrock's
function, and training a linear model on a real MNIST subset above a floor. The learning rate of
the last three is the first of LEARNING_RATES (or `--learning_rate`) that passes.
"""

from typing import Callable, NamedTuple

import optax

from jaxdigits import conformance as checks
from jaxdigits import optimizers, plugin
from jaxdigits.config import Config
from jaxdigits.errors import UserError

LEARNING_RATES = (0.1, 0.03, 0.01, 3e-3, 1e-3)


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


def make_maker(optimizer, optimizer_args: str = "") -> Callable:
    """`make(learning_rate) -> tx` from a registered name, a 'module:factory' spec or a callable."""
    if callable(optimizer):
        return optimizer
    if plugin.is_spec(optimizer):
        return plugin.plugin_maker(optimizer, optimizer_args)  # Loaded and checked once.
    config = Config(optimizer=optimizer, optimizer_args=optimizer_args)
    optimizers.make_optimizer(config, 1)  # Unknown names and misplaced arguments: one sentence.
    return lambda learning_rate: optimizers.make_optimizer(config, 1, schedule=learning_rate)


def check(optimizer, *, optimizer_args: str = "", learning_rate: float | None = None,
          mnist=None, skip: tuple = ()) -> Report:
    """Runs every item (except those named in `skip`) and returns the report; never raises for
    a failing item. `mnist` is a loaded `data.Dataset` (default: the bundled MNIST)."""
    make = make_maker(optimizer, optimizer_args)
    rates = (learning_rate,) if learning_rate else LEARNING_RATES
    items = []
    try:
        tx = make(0.01)
        if not isinstance(tx, optax.GradientTransformation):
            raise TypeError(f"make(learning_rate) returned a {type(tx).__name__}")
    except Exception as e:
        return Report([Item("builds", False, f"{type(e).__name__}: {e}")])
    items.append(Item("builds", True, "returns an optax.GradientTransformation"))
    runs = [
        ("pure", lambda: checks.pure(tx)),
        ("jit", lambda: checks.jits_once(tx)),
        ("state", lambda: checks.state_stable(tx)),
        ("dtypes", lambda: checks.dtypes(tx)),
        ("extra_kwargs", lambda: checks.extra_kwargs(tx)),
        ("inject_hyperparams", lambda: checks.inject_hyperparams(make)),
        ("quadratic", lambda: checks.first_rate(checks.QUADRATIC, make, rates)),
        ("rosenbrock", lambda: checks.first_rate(checks.ROSENBROCK, make, rates)),
        ("mnist", lambda: checks.first_rate(checks.mnist_problem(mnist), make, rates)),
    ]
    for name, run in runs:
        if name in skip:
            continue
        try:
            reason = run()
            items.append(Item(name, True, reason))
        except checks.Failed as e:
            items.append(Item(name, False, str(e)))
        except Exception as e:  # The optimizer under test crashed: that is this item's failure.
            items.append(Item(name, False, f"raised {type(e).__name__}: {_first_line(e)}"))
    return Report(items)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def main(argv):
    from absl import flags, logging

    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.WARNING)
    if len(argv) != 2:
        raise UserError("pass one optimizer: a registered name (adam), module:factory or "
                        "path/to/file.py:factory.")
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
