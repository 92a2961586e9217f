"""Experiment 9: learning-rate sensitivity on MNIST: too small is slow, too large diverges.

    python -m experiments.exp9_lr_sensitivity
    -> MLP + SGD, 400 steps over 12,800 images, test accuracy on all 10,000 images:
       lr 0.001: loss 2.559 -> 1.0588, 77.43% (converging, slowly)
       lr 0.01:  loss 2.559 -> 0.3796, 90.06% (converging)
       lr 0.1:   loss 2.559 -> 0.1539, 94.48% (converging; the best)
       lr 1:     loss 2.559 -> peak 77.9 -> 0.6315, 71.90% (overshot, then recovered)
       lr 10:    loss 2.559 -> peak 1.25e+06 -> 2.3462, 10.14% (diverged: ends at chance)
       lr 1000:  loss non-finite from step 12, 9.80% (diverged); train_and_evaluate at lr 1000
                 stopped with "training diverged in epoch 1: the loss is nan; ...", caught
       (seed 0; the shared 2-core AMD EPYC, CPU only, jax 0.10.2, under load ~14 from
       other jobs: 19 s CPU, 49 s wall)

jaxdigits' MLP (784-512-10, `models.make_model("mlp")`) trained by jaxdigits' plain "sgd"
optimizer (`optimizers.OPTIMIZERS`, i.e. optax.sgd) with a constant learning rate, from the same
initialisation and on the same batches (128 images each, from a per-epoch shuffle of the first
`--train_examples` training images) for every rate. The training loss of every step is kept, and
each final model is scored on the full 10,000-image test set. A run has diverged when its loss
becomes non-finite (the step is recorded) or ends no better than chance (ln 10: a model that
learned nothing); it overshot when its loss rose above twice its starting value. The scan keeps
going through NaNs, so detecting divergence never stops the experiment. Then the library's own
guard is shown: `train.train_and_evaluate` with the smallest rate that went non-finite stops with a
one-sentence UserError, which is caught and recorded. The learning rate is an argument of one
compiled function, so all rates share one compilation. Outputs: results.json (non-finite losses
are stored as null, JSON having no NaN) and lr_sensitivity.png (the loss curves on one plot;
final loss and test accuracy against the rate).
"""

import dataclasses
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import _common
from jaxdigits import cli, inputs, losses, models, optimizers, scoring, step, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError, report_user_errors

SECTION = "Learning-rate sensitivity: from too slow to divergence"


def make_trainer(model, config: Config, images, labels, steps: int, batch_size: int):
    """A jitted `(params, learning_rate, key) -> (params, loss per step [steps])`."""
    n = images.shape[0]
    per_epoch = n // batch_size

    def loss_fn(params, batch_images, batch_labels):
        logits = model.apply(params, batch_images)  # [b, 10]
        return losses.cross_entropy(logits=logits, labels=batch_labels).mean()

    @jax.jit
    def run(params, learning_rate, key):
        tx = optimizers.OPTIMIZERS[config.optimizer](learning_rate, config)  # lr is traced
        epochs = -(-steps // per_epoch)
        order = jnp.concatenate([jax.random.permutation(jax.random.fold_in(key, e), n)
                                 [:per_epoch * batch_size] for e in range(epochs)])
        batches = order.reshape(-1, batch_size)[:steps]  # [steps, b]

        def sgd_step(carry, idx):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, images[idx], labels[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), curve = jax.lax.scan(sgd_step, (params, tx.init(params)), batches)
        return params, curve

    return run


def classify(curve: np.ndarray, num_classes: int = 10) -> dict:
    """What a loss curve did. `chance` is ln(classes): the loss of a model that learned nothing.

    diverged: the loss became non-finite, or it ends no better than chance;
    overshot: the loss rose above twice its starting value at some step (and perhaps recovered).
    """
    chance = math.log(num_classes)
    bad = np.flatnonzero(~np.isfinite(curve))
    tail = curve[-max(len(curve) // 10, 1):]
    final = float(np.mean(tail)) if np.all(np.isfinite(tail)) else math.inf
    peak = float(np.max(curve)) if not len(bad) else math.inf
    diverged = bool(len(bad)) or final >= chance
    overshot = peak > 2 * curve[0]
    status = ("diverged" if diverged else "overshot, then recovered" if overshot else "converging")
    return {"status": status, "diverged": diverged, "overshot": overshot,
            "non_finite_at_step": int(bad[0]) if len(bad) else None,
            "initial_loss": float(curve[0]), "peak_loss": peak, "final_loss": final,
            "chance_loss": chance}


def library_guard(learning_rate: float, steps: int, batch_size: int, train_examples: int,
                  workdir, seed: int) -> dict:
    """What `train_and_evaluate` does at this rate, over at least `steps` steps: a caught
    UserError, or its test accuracy."""
    epochs = -(-steps // (train_examples // batch_size))
    config = dataclasses.replace(Config(), model="mlp", optimizer="sgd", schedule="constant",
                                 learning_rate=learning_rate, epochs=epochs, validation_size=0,
                                 batch_size=batch_size, max_train_examples=train_examples,
                                 seed=seed)
    if workdir.exists():
        shutil.rmtree(workdir)
    try:
        final = train.train_and_evaluate(config, workdir, allow_download=False, quiet=True)
    except UserError as e:
        return {"learning_rate": learning_rate, "stopped": True, "message": str(e)}
    return {"learning_rate": learning_rate, "stopped": False,
            "test_accuracy": final["test_accuracy"]}


def plot(path, rates, curves, summary, budget):
    fig, axes = _common.subplots(1, 2, width=6.0)
    ax = axes[0, 0]
    colors = [_common.plt.cm.tab10(i % 10) for i in range(len(rates))]
    ceiling = 20.0
    for lr, curve, color in zip(rates, curves, colors):
        s = summary[str(lr)]
        label = f"lr {lr:g}: {s['status']}" + (f", NaN/inf at step {s['non_finite_at_step']}"
                                                if s["non_finite_at_step"] is not None else "")
        shown = np.where(np.isfinite(curve), np.minimum(curve, ceiling), np.nan)
        ax.plot(np.arange(1, len(curve) + 1), shown, color=color, linewidth=1, label=label)
        if s["non_finite_at_step"] is not None:
            ax.plot(s["non_finite_at_step"] + 1, ceiling, "x", color="red", markersize=10,
                    markeredgewidth=2)
    ax.set(xlabel="SGD step (batch 128)", ylabel=f"training loss (capped at {ceiling:g})",
           yscale="log", title=f"Training loss per learning rate ({budget})")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    finals = [summary[str(lr)]["final_loss"] for lr in rates]
    accs = [100 * summary[str(lr)]["test_accuracy"] for lr in rates]
    ax.plot(rates, np.minimum(finals, ceiling), "o-", color="tab:blue",
            label=f"final training loss (inf shown as {ceiling:g})")
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final training loss",
           title="Sensitivity to the learning rate")
    twin = ax.twinx()
    twin.plot(rates, accs, "s--", color="tab:orange", label="test accuracy (10,000 images)")
    twin.set(ylabel="test accuracy, %", ylim=(0, 100))
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="center left")
    return _common.save_figure(fig, path)


def run(workdir, *, learning_rates=(0.001, 0.01, 0.1, 1.0, 10.0, 1000.0), steps=400, batch_size=128,
        train_examples=12800, check_library=True, seed=0) -> dict:
    _common.check_positive(steps=steps, batch_size=batch_size, train_examples=train_examples)
    if not learning_rates or any(not lr > 0 for lr in learning_rates):
        raise UserError(f"--learning_rates must be positive numbers, got {list(learning_rates)}.")
    workdir = _common.prepare_workdir(workdir)
    rates = sorted(float(lr) for lr in learning_rates)
    config = dataclasses.replace(Config(), model="mlp", optimizer="sgd", schedule="constant",
                                 max_train_examples=train_examples, validation_size=5000,
                                 seed=seed)
    _, (tx_images, tx_labels), _, (test_x, test_y) = inputs.prepare_data(config,
                                                                         allow_download=False)
    if len(tx_labels) < batch_size:
        raise UserError(f"--train_examples={train_examples} is smaller than a batch.")
    mean, std = inputs.pixel_stats(tx_images)
    images = inputs.normalise(jnp.asarray(tx_images), mean, std)  # [n, 28, 28, 1]
    model = models.make_model("mlp")
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params0 = model.init(init_key, images.shape[1:])
    trainer = make_trainer(model, config, images, jnp.asarray(tx_labels), steps, batch_size)
    # The library's evaluator scores every test image; it needs only the model and normalisation.
    setup = step.Setup(config, model, optax.identity(), tuple(images.shape[1:]), 1, mean, std)
    evaluate = scoring.make_evaluator(setup)
    test = inputs.to_device(test_x, test_y)
    curves, summary, finals = [], {}, {}
    for i, lr in enumerate(rates):
        params, curve = trainer(params0, jnp.float32(lr), data_key)
        finals[f"lr{i}"] = params  # The final parameters at each rate, for the checkpoint.
        curve = np.asarray(curve)
        curves.append(curve)
        scored = evaluate(params, test)
        summary[str(lr)] = {**classify(curve), "test_accuracy": scored["accuracy"],
                            "test_count": scored["count"]}
    finite = [lr for lr in rates if not summary[str(lr)]["diverged"]]
    best = min(finite, key=lambda lr: summary[str(lr)]["final_loss"]) if finite else None
    blown = [lr for lr in rates if summary[str(lr)]["non_finite_at_step"] is not None]
    guard = (library_guard(blown[0], steps, batch_size, len(tx_labels), workdir / "library_run",
                           seed)
             if check_library and blown else None)
    budget = f"{steps} steps over {len(tx_labels):,} images"
    results = {"experiment": "exp9_lr_sensitivity",
               "flags": {"learning_rates": rates, "steps": steps, "batch_size": batch_size,
                         "train_examples": train_examples, "seed": seed},
               "model": "mlp", "optimizer": "sgd (constant rate)", "budget": budget,
               "best_learning_rate": best, "diverged": [lr for lr in rates
                                                        if summary[str(lr)]["diverged"]],
               "runs": summary, "library_guard": guard,
               "loss_per_step": {str(lr): c for lr, c in zip(rates, curves)}}
    plot(workdir / "lr_sensitivity.png", rates, curves, summary, budget)
    return _common.finish(workdir, results, state={"params": finals},
                          curves={f"loss_lr{lr:g}": c for lr, c in zip(rates, curves)})


def headline(r) -> str:
    runs, best = r["runs"], r["best_learning_rate"]
    rates = [float(lr) for lr in runs]
    guard = r["library_guard"]
    return (f"MLP + SGD at lr {min(rates):g} ... {max(rates):g}, {r['flags']['steps']} steps: "
            f"{best:g} is best ({100 * runs[str(best)]['test_accuracy']:.2f} %), diverged: "
            f"{', '.join(f'{lr:g}' for lr in r['diverged'])}"
            + (f"; train_and_evaluate at lr {guard['learning_rate']:g} stops with its one-sentence "
               "error" if guard and guard["stopped"] else ""))


def main(argv):
    cli.start(argv)
    f = flags.FLAGS
    r = run(f.workdir, learning_rates=_common.floats("learning_rates", f.learning_rates),
            steps=f.steps,
            batch_size=f.batch_size, train_examples=f.train_examples,
            check_library=f.check_library, seed=f.seed)
    for lr, s in r["runs"].items():
        state = s["status"] + (f" (non-finite from step {s['non_finite_at_step']})"
                               if s["non_finite_at_step"] is not None else "")
        print(f"lr {float(lr):<8g} loss {s['initial_loss']:.3f} -> peak {s['peak_loss']:.3g} -> "
              f"{s['final_loss']:.4f}  test "
              f"accuracy {100 * s['test_accuracy']:5.2f}%  {state}")
    if r["library_guard"]:
        g = r["library_guard"]
        print(f"train_and_evaluate at lr {g['learning_rate']:g}: " +
              (f"stopped: {g['message']}" if g["stopped"] else
               f"completed, test accuracy {100 * g['test_accuracy']:.2f}%"))
    print(f"Best rate {r['best_learning_rate']}. "
          f"Wrote {f.workdir}/results.json, lr_sensitivity.png")


if __name__ == "__main__":
    _common.define_workdir_flag("exp9_lr_sensitivity")
    flags.DEFINE_list("learning_rates", ["0.001", "0.01", "0.1", "1", "10", "1000"],
                      "Learning rates to compare.")
    flags.DEFINE_integer("steps", 400, "SGD steps per rate.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_integer("train_examples", 12800, "Training images used (the first of the split).")
    flags.DEFINE_bool("check_library", True, "Also run train_and_evaluate at the smallest rate "
                      "that went non-finite, and record how it stops.")
    flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the batches.")
    app.run(report_user_errors(main))
