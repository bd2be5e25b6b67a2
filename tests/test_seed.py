"""The walkthrough's numbers, for both gradients, in float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmlp
from jmlp import walkthrough as w

SEED_GRADS = {  # the text's dW1, db1, dW2, db2
    "W1": [[-9.06, -13.59], [-10.57, -15.855]],
    "b1": [-4.53, -5.285],
    "W2": [[-12.835, -14.345]],
    "b2": [-7.55],
}
SEED_AFTER_ONE_STEP = {
    "W1": [[1.406, 1.559], [1.357, 1.9855]],
    "b1": [0.553, 0.6285],
    "W2": [[1.8835, 2.1345]],
    "b2": [0.855],
}


def _as_text_names(params):
    return {"W1": params[0]["W"], "b1": params[0]["b"], "W2": params[1]["W"], "b2": params[1]["b"]}


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_forward_backward_and_update(grad, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = w.seed_params(jnp.dtype(dtype))
        x = jnp.array([w.X], dtype)
        y = jnp.array([[w.Y]], dtype)
        tol = 1e-12 if dtype == "float64" else 1e-6
        assert float(w.MODEL.apply(params, x)[0, 0]) == pytest.approx(2.45, rel=tol)
        assert float(jmlp.loss_fn(w.MODEL, w.LOSS)(params, x, y)) == pytest.approx(28.50125, rel=tol)
        grads = jmlp.grad_fn(w.MODEL, w.LOSS, grad)(params, x, y)
        for name, expected in SEED_GRADS.items():
            np.testing.assert_allclose(_as_text_names(grads)[name], expected, rtol=tol, err_msg=name)
        step = jmlp.Step(w.MODEL, w.LOSS, "sgd", grad)
        new, _, loss = step(params, step.init(params, 0.1), x, y)
        for name, expected in SEED_AFTER_ONE_STEP.items():
            np.testing.assert_allclose(_as_text_names(new)[name], expected, rtol=tol, err_msg=name)


def test_seed_backward_intermediates():
    with jax.enable_x64(True):
        _, trace = jmlp.backward(w.MODEL, w.LOSS, w.seed_params(), jnp.array([w.X]), jnp.array([[w.Y]]))
        hidden, out = trace["layers"]
        np.testing.assert_allclose(hidden["z"][0], [1.7, 1.9], rtol=1e-15)
        np.testing.assert_allclose(trace["dy_hat"][0], [-7.55], rtol=1e-15)
        np.testing.assert_allclose(out["dh_in"][0], [-4.53, -5.285], rtol=1e-15)
        np.testing.assert_allclose(hidden["dz"][0], [-4.53, -5.285], rtol=1e-15)


def test_walkthrough_finds_the_overshoot_and_converges():
    result = w.walkthrough(steps=100)
    losses = result["losses"]
    assert losses[0] == pytest.approx(28.50125)
    assert losses[1] == pytest.approx(334.1325, rel=1e-6)  # step 2 overshoots
    assert all(b < a for a, b in zip(losses[1:], losses[2:]))  # then falls every step
    assert losses[-1] < 1e-6
    assert "step 2 overshoots" in result["findings"][0]
    assert result["manual_vs_autodiff_max_abs_diff"] == 0.0
