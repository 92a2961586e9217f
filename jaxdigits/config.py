"""The run configuration: one frozen dataclass and its checks (its flags are in `cli`).

Every field is a flag of `python -m jaxdigits.train` with the same name. The config is saved as
`config.json` in the workdir and inside every checkpoint, so a run can be evaluated and resumed
from its workdir alone.
"""

import dataclasses
import math
import json

from jaxdigits.errors import UserError


def _f(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = _f("mnist", "mnist, fashion_mnist, kmnist, or tfds:NAME.")
    model: str = _f("cnn", "linear, mlp, cnn, cnn_small, cnn_tiny or cnn_deep.")
    hidden: tuple[int, ...] = _f((), "MLP hidden sizes (default 512) or the CNN's dense width "
                                     "(default 128), comma-separated.")
    features: tuple[int, ...] = _f((), "The CNN's two convolution widths, comma-separated "
                                       "(default: the model's, 32,64 for cnn; cnn and its "
                                       "smaller kinds only).")
    crop: int = _f(0, "Cut this many pixels off each border of every image inside the model, "
                      "before its first layer (it still takes full-size images): MNIST's digits "
                      "sit in the central 20x20 pixels (0: off).")
    dropout: float = _f(0.0, "Dropout rate before the output layer (mlp, cnn; cnn_deep: after "
                              "each block too).")
    batch_norm: bool = _f(False, "Batch normalisation after each convolution block's pooling "
                                 "and the dense layer's ReLU (the cnn family; cnn_deep always "
                                 "has it).")
    ema_decay: float = _f(0.0, "Keep an exponential moving average of the parameters with this "
                               "decay (e.g. 0.999) and score it everywhere: validation, the best "
                               "checkpoint, test, evaluate, export (0: off).")
    label_smoothing: float = _f(0.0, "Train on labels smoothed by this much (0: off).")
    tta_shift: int = _f(0, "Score every image as the mean probability over its copies shifted "
                           "by up to this many pixels on each axis, (2s+1)^2 views (0: off).")
    tta_flip: bool = _f(False, "Score every image's left-right mirror image too (doubling the "
                               "views): for mirror-symmetric classes such as Fashion-MNIST's.")
    optimizer: str = _f("adam", "sgd, momentum, nesterov, rmsprop, adam, adamw, scratch_* (our own "
                                "versions), a registered one, or your own as module:factory or "
                                "file.py:factory.")
    optimizer_args: str = _f("", "Arguments of a module:factory optimizer, 'name=value,...', typed "
                                 "from its signature.")
    learning_rate: float = _f(1e-3, "Peak learning rate.")
    schedule: str = _f("warmup_cosine", "constant, cosine, warmup_cosine or one_cycle.")
    warmup_epochs: float = _f(0.5, "Linear warm-up length for warmup_cosine, in epochs.")
    momentum: float = _f(0.9, "Momentum for momentum and nesterov.")
    b1: float = _f(0.9, "Adam's first-moment decay.")
    b2: float = _f(0.999, "Adam's second-moment decay.")
    weight_decay: float = _f(1e-4, "Decoupled weight decay of adamw.")
    l2: float = _f(0.0, "L2 penalty on weights added to the loss (coefficient of 0.5*||w||^2).")
    grad_clip: float = _f(0.0, "Clip gradients to this global norm (0: no clipping).")
    augment_shift: int = _f(0, "Shift training images randomly by up to this many pixels (0: off; "
                               "--model=cnn defaults to 2).")
    augment_rotate: float = _f(0.0, "Rotate training images by a random angle of up to this many "
                                     "degrees (0: off).")
    augment_scale: float = _f(0.0, "Scale training images by a random factor in [1 - s, 1 + s] "
                                   "(0: off).")
    augment_elastic: float = _f(0.0, "Elastic deformation of training images (Simard et al. "
                                     "2003): displacement scale alpha in pixels (0: off; 8 is mild, "
                                     "34 strong).")
    augment_elastic_sigma: float = _f(4.0, "Smoothness of the elastic displacement field: the "
                                           "Gaussian's standard deviation in pixels.")
    augment_flip: bool = _f(False, "Mirror half the training images left-right: for "
                                   "mirror-symmetric classes such as Fashion-MNIST's, not digits.")
    batch_size: int = _f(128, "Training batch size.")
    eval_batch_size: int = _f(1000, "Evaluation batch size (every example is scored regardless).")
    epochs: int = _f(5, "Training epochs (--model=linear and mlp default to 10).")
    seed: int = _f(0, "Seed for initialisation, validation split, shuffling, dropout, augmentation.")
    validation_size: int = _f(5000, "Training examples held out for validation.")
    max_train_examples: int = _f(0, "Use only this many training examples (0: all); for quick runs.")
    driver: str = _f("auto", "How steps are driven: auto, step, unroll or scan.")
    steps_per_call: int = _f(0, "Steps compiled into one call by unroll/scan (0: per backend).")
    num_models: int = _f(1, "Train this many models at once, seeds SEED..SEED+K-1, in one program "
                            "(jax.vmap); see docs/scale.md.")
    sweep: str = _f("", "Train one model per setting in one program, e.g. "
                        "learning_rate=1e-4,3e-4,1e-3;momentum=0.8,0.9 (the grid of all pairs).")
    dtype: str = _f("float32", "Compute dtype: float32 or bfloat16 (parameters, optimizer state, "
                               "loss and softmax stay float32).")
    layers: str = _f("auto", "CNN layer formulations: auto (fast on CPU, plain elsewhere), fast "
                             "(jaxdigits.fastconv) or plain; same math either way.")
    members: str = _f("auto", "How the members of --num_models/--sweep share each step: auto (loop "
                              "for conv nets on CPU, vmap otherwise), loop or vmap; same math.")
    cpu_conv: str = _f("auto", "Convolution kernels on the CPU backend: auto (onednn where "
                               "installed, else eigen), onednn (XLA's Eigen forward, oneDNN's "
                               "gradients), eigen (XLA's own) or ynnpack (XLA's default); "
                               "ignored on GPU and TPU.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"config has unknown fields {sorted(unknown)}; it was written by "
                            "another version of jaxdigits.")
        d = dict(d)
        d["hidden"] = tuple(d.get("hidden", ()))
        d["features"] = tuple(d.get("features", ()))
        return cls(**d)


DRIVERS = ("auto", "step", "unroll", "scan")
FEATURED = ("cnn", "cnn_small", "cnn_tiny")  # The models whose widths --features sets.
LAYERS = ("auto", "fast", "plain")
MEMBERS = ("auto", "loop", "vmap")
CPU_CONVS = ("auto", "onednn", "eigen", "ynnpack")
DTYPES = ("float32", "bfloat16")

# What `python -m jaxdigits.train --model=NAME` uses for flags not given on the command line,
# where the shared defaults above are not the best choice for that model (measured: README).
MODEL_DEFAULTS = {
    "linear": {"epochs": 10},
    "mlp": {"epochs": 10},
    "cnn": {"augment_shift": 2},
}

# And where a dataset needs more than its model's defaults (chosen on validation accuracy:
# BUILD_NOTES.md, "Models"): Fashion-MNIST's default CNN underfits in 5 epochs.
DATASET_DEFAULTS = {
    "fashion_mnist": {"cnn": {"epochs": 15, "batch_norm": True, "dropout": 0.3}},
}


def defaults_for(model: str, dataset: str) -> dict:
    """The values `python -m jaxdigits.train --model=MODEL --dataset=DATASET` takes for flags not
    given: the model's MODEL_DEFAULTS, then the dataset's DATASET_DEFAULTS for that model."""
    return {**MODEL_DEFAULTS.get(model, {}), **DATASET_DEFAULTS.get(dataset, {}).get(model, {})}


def validate(config: Config) -> Config:
    """Raises UserError, in one sentence, for values no run can use."""
    for name in ("learning_rate", "warmup_epochs", "momentum", "b1", "b2", "weight_decay", "l2",
                 "grad_clip", "dropout", "augment_rotate", "augment_scale", "ema_decay",
                 "label_smoothing", "augment_elastic", "augment_elastic_sigma"):
        if not math.isfinite(getattr(config, name)):
            raise UserError(f"--{name} must be a finite number, got {getattr(config, name)}.")
    checks = [
        (0 <= config.seed < 2**32, f"--seed must be in [0, 2**32), got {config.seed}"),
        (config.epochs <= 100_000, f"--epochs must be at most 100000, got {config.epochs}"),
        (min(config.weight_decay, config.l2, config.grad_clip, config.momentum) >= 0,
         "--weight_decay, --l2, --grad_clip and --momentum must be 0 or more"),
        (0 <= config.b1 < 1 and 0 <= config.b2 < 1, "--b1 and --b2 must be in [0, 1)"),
        (config.batch_size > 0, f"--batch_size must be positive, got {config.batch_size}"),
        (config.eval_batch_size > 0, f"--eval_batch_size must be positive, got {config.eval_batch_size}"),
        (config.epochs > 0, f"--epochs must be at least 1, got {config.epochs}"),
        (config.learning_rate > 0, f"--learning_rate must be positive, got {config.learning_rate}"),
        (config.validation_size >= 0, f"--validation_size must be 0 or more, got {config.validation_size}"),
        (config.max_train_examples >= 0, "--max_train_examples must be 0 (all) or more"),
        (0 <= config.dropout < 1, f"--dropout must be in [0, 1), got {config.dropout}"),
        (config.warmup_epochs >= 0, "--warmup_epochs must be 0 or more"),
        (config.steps_per_call >= 0, "--steps_per_call must be 0 (auto) or more"),
        (config.augment_shift >= 0, "--augment_shift must be 0 (off) or more"),
        (config.crop >= 0, f"--crop must be 0 or more, got {config.crop}"),
        (0 <= config.augment_rotate <= 180, "--augment_rotate must be in [0, 180] degrees"),
        (0 <= config.augment_scale < 1, "--augment_scale must be in [0, 1)"),
        (0 <= config.augment_elastic <= 100, "--augment_elastic must be in [0, 100] pixels"),
        (0.5 <= config.augment_elastic_sigma <= 10, "--augment_elastic_sigma must be in [0.5, 10]"),
        (0 <= config.ema_decay < 1, f"--ema_decay must be in [0, 1), got {config.ema_decay}"),
        (0 <= config.label_smoothing < 1, "--label_smoothing must be in [0, 1)"),
        (0 <= config.tta_shift <= 4, f"--tta_shift must be in [0, 4], got {config.tta_shift}"),
        (config.num_models >= 1, f"--num_models must be at least 1, got {config.num_models}"),
        (all(h > 0 for h in config.hidden), f"--hidden sizes must be positive, got {config.hidden}"),
        (not config.features or (len(config.features) == 2 and min(config.features) > 0),
         f"--features must be two positive widths, got {config.features}"),
        (not config.features or config.model in FEATURED,
         f"--features is for the {', '.join(FEATURED)} models, not {config.model}"),
        (config.driver in DRIVERS, f"unknown --driver {config.driver!r}; choose one of {', '.join(DRIVERS)}"),
        (config.layers in LAYERS, f"unknown --layers {config.layers!r}; choose one of {', '.join(LAYERS)}"),
        (config.members in MEMBERS, f"unknown --members {config.members!r}; choose one of {', '.join(MEMBERS)}"),
        (config.dtype in DTYPES, f"unknown --dtype {config.dtype!r}; choose one of {', '.join(DTYPES)}"),
        (config.cpu_conv in CPU_CONVS, f"unknown --cpu_conv {config.cpu_conv!r}; choose one of {', '.join(CPU_CONVS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message + ".")
    return config
