"""Which learning rates converge, overshoot or die on the walkthrough's one sample?

Runs the ``[sweep]`` of ``configs/seed.toml`` (the text's starting weights) as
one ``jmlp.sweep`` and reads each run's loss curve and final hidden layer:

    python experiments/seed_lr.py
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jmlp.config import load
from jmlp.experiment import run_sweep
from jmlp.report import fmt, table
from jmlp.walkthrough import MODEL, X


def main():
    config = load(Path(__file__).parent / "configs" / "seed.toml")
    result = run_sweep(config)
    rows = []
    for i, lr in enumerate(result.learning_rates):
        losses = result.losses[i, 0, : result.steps[i, 0]]
        rises = np.flatnonzero(np.diff(losses) > 0)
        params = [{k: v[i, 0] for k, v in layer.items()} for layer in result.params]
        z1 = MODEL.forward(params, jnp.array([X], jnp.float32))[1][0][1][0]
        dead = int(jnp.sum(z1 <= 0))
        if result.diverged[i, 0]:
            outcome = "diverges"
        elif result.converged[i, 0]:
            outcome = f"converges at step {result.steps_to_tol[i, 0]}"
        else:
            outcome = f"not below tol after {result.steps[i, 0]} steps"
        peak = f"{fmt(float(losses.max()))} at step {int(losses.argmax()) + 1}" if rises.size else "—"
        rows.append([fmt(float(lr)), outcome, f"step {rises[0] + 2}" if rises.size else "never", peak, f"{dead}/2"])
    print(table(rows, ["η", "outcome (L < 1e-6)", "first overshoot", "peak L", "dead ReLUs at end"]))


if __name__ == "__main__":
    main()
