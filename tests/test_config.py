"""The config: flags, per-model defaults, a saved run's config, and the checks."""

import dataclasses

import pytest
from absl import flags

from jaxdigits import cli, config as config_lib, recipes, step
from jaxdigits.config import Config
from jaxdigits.errors import UserError


@pytest.fixture
def parse():
    if "recipe" not in flags.FLAGS:
        cli.define_train_flags()

    def parse_fn(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog", *args])
        return flags.FLAGS

    yield parse_fn
    flags.FLAGS.unparse_flags()


def test_every_field_is_a_flag_and_defaults_agree(parse):
    parse()
    for field in dataclasses.fields(Config):
        assert field.name in flags.FLAGS
    assert cli.from_flags(Config(model="cnn")) == Config(model="cnn")


def test_model_defaults_apply_unless_a_flag_is_given(parse):
    parse("--model=mlp")
    assert cli.from_flags().epochs == config_lib.MODEL_DEFAULTS["mlp"]["epochs"]
    parse("--model=mlp", "--epochs=3", "--hidden=64,32")
    config = cli.from_flags()
    assert config.epochs == 3 and config.hidden == (64, 32) and config.model == "mlp"
    parse("--model=cnn_tiny", "--features=8,32")
    assert cli.from_flags().features == (8, 32)
    parse("--model=cnn")
    assert cli.from_flags().epochs == Config().epochs
    parse("--dataset=fashion_mnist")  # The default model on Fashion-MNIST: its own settings.
    config = cli.from_flags()
    assert (config.epochs, config.batch_norm, config.dropout, config.augment_shift) == (15, True, 0.3, 2)
    parse("--dataset=fashion_mnist", "--epochs=2", "--nobatch_norm")
    config = cli.from_flags()
    assert (config.epochs, config.batch_norm, config.dropout) == (2, False, 0.3)
    parse("--dataset=fashion_mnist", "--model=mlp")
    assert cli.from_flags().epochs == 10 and not cli.from_flags().batch_norm


def test_a_recipe_takes_its_datasets_values_and_flags_override_them(parse):
    accurate = recipes.config("accurate")
    assert accurate.dataset == "mnist" and not accurate.augment_flip  # Digits are never mirrored.
    parse("--recipe=accurate", "--dataset=fashion_mnist", "--epochs=3")
    config, _ = cli.run_config()
    assert config == dataclasses.replace(accurate, **{
        **recipes.FOR_DATASET["fashion_mnist"]["accurate"], "dataset": "fashion_mnist", "epochs": 3})
    assert config.augment_flip and config.tta_flip
    for dataset in ("mnist", "fashion_mnist"):  # The ensemble: three of the accurate model.
        assert recipes.config("ensemble", dataset) == dataclasses.replace(
            recipes.config("accurate", dataset), num_models=3)
    speedrun = recipes.config("speedrun", "fashion_mnist")  # No values of its own there.
    assert speedrun == dataclasses.replace(recipes.config("speedrun"), dataset="fashion_mnist")


def test_a_saved_config_holds_except_for_given_flags(parse):
    saved = Config(model="linear", epochs=7, learning_rate=0.5)
    parse("--learning_rate=0.25")
    assert cli.from_flags(saved) == dataclasses.replace(saved, learning_rate=0.25)


def test_json_round_trip_and_foreign_fields():
    for config in (Config(model="mlp", hidden=(128, 64)), Config(model="cnn", features=(8, 32))):
        assert Config.from_dict(__import__("json").loads(config.to_json())) == config
    with pytest.raises(UserError, match="unknown fields \\['colour'\\]"):
        Config.from_dict({"colour": "red"})


@pytest.mark.parametrize("change, message", [
    ({"dropout": 1.0}, "--dropout must be in [0, 1)"),
    ({"eval_batch_size": 0}, "--eval_batch_size must be positive"),
    ({"hidden": (0,)}, "--hidden sizes must be positive"),
    ({"model": "cnn_tiny", "features": (8,)}, "--features must be two positive widths, got"),
    ({"model": "cnn_tiny", "features": (8, 0)}, "--features must be two positive widths"),
    ({"model": "mlp", "features": (8, 16)}, "--features is for the cnn, cnn_small, cnn_tiny models, not mlp"),
    ({"max_train_examples": -1}, "--max_train_examples must be 0"),
    ({"crop": -1}, "--crop must be 0 or more, got -1"),
    ({"augment_rotate": 200.0}, "--augment_rotate must be in [0, 180] degrees"),
    ({"augment_scale": 1.0}, "--augment_scale must be in [0, 1)"),
    ({"members": "pmap"}, "unknown --members 'pmap'; choose one of auto, loop, vmap"),
    ({"cpu_conv": "mkl"}, "unknown --cpu_conv 'mkl'; choose one of auto, onednn, eigen, ynnpack"),
])
def test_impossible_values_are_refused(change, message):
    with pytest.raises(UserError, match=message.replace("[", "\\[").replace(")", "\\)")):
        config_lib.validate(dataclasses.replace(Config(), **change))


def test_a_crop_must_leave_an_image():
    step.make_setup(Config(crop=10), 1000, (28, 28, 1), 10, 0.13, 0.31)  # 8x8 left: fine.
    with pytest.raises(UserError, match=r"--crop=11 leaves less than 8x8 of the 28x28 images\."):
        step.make_setup(Config(crop=11), 1000, (28, 28, 1), 10, 0.13, 0.31)
