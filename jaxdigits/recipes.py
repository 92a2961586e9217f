"""Named recipes: whole configs chosen for one goal, selected with `--recipe=NAME`.

    python -m jaxdigits.train --recipe=speedrun     # >= 99.0 % test accuracy, fastest here

Flags given on the command line override the recipe's values. How each recipe was chosen (on
validation accuracy only) and what it measured is in BUILD_NOTES.md (issue 6).
"""

import dataclasses

from jaxdigits.config import Config
from jaxdigits.errors import UserError

RECIPES = {
    # The least wall time to >= 99.0 % on the MNIST test set on a 2-core CPU: a CNN with a
    # quarter of the seed CNN's work, Adam on a one-cycle schedule, the fewest epochs whose
    # validation accuracy reached 99.0 % (3; 2 gave 98.92-98.96 %).
    "speedrun": dict(model="cnn_small", optimizer="adam", learning_rate=3e-3,
                     schedule="one_cycle", epochs=3, batch_size=128, augment_shift=0),
}


def config(name: str) -> Config:
    """The recipe's Config (every field not named by the recipe keeps its default)."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return dataclasses.replace(Config(), **RECIPES[name])
