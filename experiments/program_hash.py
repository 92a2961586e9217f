"""Hash of the single-device training program (StableHLO of one 8-step chunk, locations stripped).

    PYTHONPATH=. python experiments/program_hash.py      # in two checkouts: same hash, same program

Used for issue 7 to show that the data-parallel changes leave the one-device program unchanged.
"""

import hashlib
import re

import jax
import jax.numpy as jnp

from jaxdigits import train
from jaxdigits.config import Config, MODEL_DEFAULTS


def program_hash(model: str) -> tuple[str, int]:
    config = Config(model=model, **{k: v for k, v in MODEL_DEFAULTS[model].items() if k != "epochs"})
    ds, (tx, ty), _, _ = train.prepare_data(config)
    mean, std = train.pixel_stats(tx)
    setup = train.make_setup(config, len(tx), tx.shape[1:], ds.num_classes, mean, std)
    state = train.init_state(setup, jax.random.key(0))
    perm = jax.random.permutation(jax.random.key(1), len(tx)).astype(jnp.int32)
    run = train.make_chunk_runner(setup, "unroll")
    text = run.lower(state, train.zero_metrics(), train.to_device(tx, ty), perm, 0,
                     jax.random.key(2), num_steps=8).as_text()
    text = re.sub(r" loc\(.*?\)$", "", re.sub(r"^#loc.*\n", "", text, flags=re.M), flags=re.M)
    return hashlib.sha256(text.encode()).hexdigest()[:16], len(text)


if __name__ == "__main__":
    for model in ("linear", "mlp", "cnn"):
        print(model, *program_hash(model))
