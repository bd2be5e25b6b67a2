"""The seed walkthrough (``../shared/seed/training-an-mlp.md``), recomputed.

Only the walkthrough's *inputs* are written here (x, y, the starting weights,
η); every number ``jmlp explain`` prints is computed by the library's own
forward pass, hand-derived backward pass, optax SGD step and ``fit``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .fit import fit
from .gradients import autodiff_grad, backward
from .model import MLP
from .step import Step

MODEL = MLP((2, 2, 1), "relu")
LOSS = "half_squared_error"
X = [2.0, 3.0]
Y = 10.0
LEARNING_RATE = 0.1
# W1 rows are hidden neurons (fan_out, fan_in); W2 = [0.6, 0.7]ᵀ as one row.
PARAMS = [
    {"W": [[0.5, 0.2], [0.3, 0.4]], "b": [0.1, 0.1]},
    {"W": [[0.6, 0.7]], "b": [0.1]},
]


def seed_params(dtype=jnp.float64):
    """The walkthrough's starting weights as a jmlp params pytree."""
    return [{k: jnp.asarray(v, dtype) for k, v in layer.items()} for layer in PARAMS]


def _np(a):
    return np.asarray(a).tolist()


def walkthrough(x=X, y=Y, learning_rate=LEARNING_RATE, steps=100, tol=None) -> dict:
    """Every quantity of the walkthrough, in float64, as plain lists and floats.

    >>> w = walkthrough(steps=3)
    >>> w["forward"]["z2"], w["params_after_first_step"]["b2"]
    ([2.45], [0.855])
    """
    with jax.enable_x64(True):
        params = seed_params()
        xb = jnp.asarray([x], jnp.float64)
        yb = jnp.asarray([[y]], jnp.float64)
        grads, trace = backward(MODEL, LOSS, params, xb, yb)
        auto = autodiff_grad(MODEL, LOSS)(params, xb, yb)
        agreement = max(float(jnp.max(jnp.abs(a - m))) for a, m in zip(jax.tree.leaves(auto), jax.tree.leaves(grads)))
        step = Step(MODEL, LOSS, "sgd", "manual")
        new_params, _, loss = step(params, step.init(params, learning_rate), xb, yb)
        layer1, layer2 = trace["layers"]
        run = fit(MODEL, params, xb, yb, loss=LOSS, optimizer="sgd", learning_rate=learning_rate, steps=steps, tol=tol)
        return {
            "x": list(map(float, x)),
            "y": float(y),
            "learning_rate": float(learning_rate),
            "forward": {"z1": _np(layer1["z"][0]), "h": _np(layer2["h_in"][0]), "z2": _np(layer2["z"][0]), "y_hat": _np(trace["y_hat"][0])},
            "loss": float(loss),
            "backward": {
                "dL_dy_hat": _np(trace["dy_hat"][0]),
                "dW2": _np(grads[1]["W"][0]),
                "db2": _np(grads[1]["b"]),
                "dh": _np(layer2["dh_in"][0]),
                "dz1": _np(layer1["dz"][0]),
                "dW1": _np(grads[0]["W"]),
                "db1": _np(grads[0]["b"]),
            },
            "manual_vs_autodiff_max_abs_diff": agreement,
            "params_after_first_step": {
                "W1": _np(new_params[0]["W"]),
                "b1": _np(new_params[0]["b"]),
                "W2": _np(new_params[1]["W"][0]),
                "b2": _np(new_params[1]["b"]),
            },
            "losses": _np(run.losses),
            "final_params": {"W1": _np(run.params[0]["W"]), "b1": _np(run.params[0]["b"]), "W2": _np(run.params[1]["W"][0]), "b2": _np(run.params[1]["b"])},
            "findings": findings(run.losses, run.params, xb),
        }


def findings(losses, params, x) -> list[str]:
    """What the run shows beyond the text, computed, not typed."""
    notes = []
    rises = [i for i in range(1, len(losses)) if losses[i] > losses[i - 1]]
    if rises:
        i = rises[0]
        notes.append(
            f"step {i + 1} overshoots: L goes {losses[i - 1]:.1f} -> {losses[i]:.1f} before it falls, "
            f"so \"each time ŷ gets closer\" does not hold there ({len(rises)} of {len(losses) - 1} steps raise L)"
        )
    else:
        notes.append(f"L falls at every one of the {len(losses)} steps, as the text says")
    if len(losses):
        notes.append(f"after {len(losses)} steps L = {losses[-1]:.3g}")
    z1 = MODEL.forward(params, x)[1][0][1][0]
    dead = int(jnp.sum(z1 <= 0))
    if dead:
        notes.append(
            f"{dead} of {z1.size} hidden ReLUs end dead (z1 = {np.round(np.asarray(z1), 3).tolist()} <= 0): "
            "no gradient reaches W1 or W2 through them, so ŷ approaches y through b2 alone"
        )
    return notes
