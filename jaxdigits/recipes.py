"""Named recipes: whole configs chosen for one goal, selected with `--recipe=NAME`.

    python -m jaxdigits.train --recipe=speedrun     # >= 99.0 % test accuracy, fastest here
    python -m jaxdigits.train --recipe=accurate     # one CNN, the accuracy ingredients that validate
    python -m jaxdigits.train --recipe=ensemble     # three accurate CNNs and their ensemble

Flags given on the command line override the recipe's values. How each recipe was chosen (on
validation accuracy only) and what it measured is in docs/performance.md and BUILD_NOTES.md.
"""

import dataclasses

from jaxdigits.config import Config
from jaxdigits.errors import UserError

ACCURATE = dict(model="cnn", batch_norm=True, ema_decay=0.999, augment_shift=2, label_smoothing=0.1,
                tta_shift=1, learning_rate=2e-3, epochs=25)

RECIPES = {
    # The least wall time to >= 99.0 % on the MNIST test set on a 2-core CPU: a small CNN with
    # 3x3 convolutions (8 and 32 channels, dense 128) and batch normalisation on the central
    # 20x20 pixels of each image (`crop`), Adam (b1 0.7, b2 0.9) at 2e-2 on a one-cycle
    # schedule, label smoothing 0.1, one epoch, one step per call (one compile of about a
    # second). Chosen on validation accuracy (BUILD_NOTES.md, "The speedrun"): without batch
    # normalisation one epoch stayed under 99.0 %; 8 and 32 channels with a dense 128 validate as
    # 16 and 32 with 256 did, at 0.8x the step time; the 20x20 centre (3.3 % of the ink outside
    # it) validates above the whole image at 0.55x the epoch. Scoring in batches of 250 rather
    # than 1,000 (the activations stay in cache).
    "speedrun": dict(model="cnn_tiny", features=(8, 32), hidden=(128,), batch_norm=True, crop=4,
                     optimizer="adam", learning_rate=2e-2, b1=0.7, b2=0.9, label_smoothing=0.1,
                     schedule="one_cycle", epochs=1, batch_size=128, augment_shift=0,
                     driver="step", eval_batch_size=250),
    # One accurate model: the default CNN with batch normalisation, a moving average of its
    # parameters (scored), shifts of up to 2 pixels, label smoothing, and test-time augmentation
    # by one-pixel shifts; Adam at 2e-3, 25 epochs. Set from the public recipes and kept on
    # validation accuracy over three seeds (BUILD_NOTES.md, "Accurate models"): elastic
    # deformation cost 0.12 points, rotations and scaling 0.05; 25 epochs gained 0.02 on 15;
    # 40 epochs with stronger augmentation, and cnn_deep, lost on seed 0.
    "accurate": ACCURATE,
    # Three accurate models (seeds SEED..SEED+2) trained at once (members looped on CPU) and
    # scored as the mean of their probabilities; each member trains as its seed's `accurate` run
    # (equal to float rounding). Its members validate above the previous recipe's (three plain
    # augmented CNNs, 10 epochs): docs/scale.md.
    "ensemble": {**ACCURATE, "num_models": 3},
}

# Per dataset, the values a recipe takes there instead, chosen on that dataset's validation split
# (docs/data.md): clothes are mirror-symmetric where digits are not, and the CNN underfits them
# (training accuracy below validation's with rotations, scaling or dropout), so mirroring, in
# training and in TTA, and 30 epochs.
FASHION_ACCURATE = dict(augment_flip=True, tta_flip=True, epochs=30)
FOR_DATASET = {
    "fashion_mnist": {
        "accurate": FASHION_ACCURATE,
        "ensemble": FASHION_ACCURATE,
    },
}

# One line per recipe for --help.
ABOUT = {
    "speedrun": ">= 99.0 % test accuracy in the least time on CPU",
    "accurate": "one CNN with the accuracy ingredients that validate, 25 epochs",
    "ensemble": "three accurate CNNs trained at once and their ensemble",
}


def config(name: str, dataset: str = "mnist") -> Config:
    """The recipe's Config for `dataset` (every field the recipe does not name keeps its default)."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    values = {**RECIPES[name], **FOR_DATASET.get(dataset, {}).get(name, {})}
    return dataclasses.replace(Config(), **values, dataset=dataset)
