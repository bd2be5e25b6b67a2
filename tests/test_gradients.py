"""manual_grad against jax.grad on random nets, every activation and loss, f32 and f64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tree_allclose
from hypothesis import given, settings
from hypothesis import strategies as st

import jmlp


def _data(model, loss, key, batch, dtype):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (batch, model.sizes[0]), dtype)
    targets = jmlp.get_loss(loss).targets
    if targets == "labels":
        y = jax.random.randint(ky, (batch,), 0, model.sizes[-1])
    elif loss == "sigmoid_binary_cross_entropy":
        y = jax.random.bernoulli(ky, 0.5, (batch, model.sizes[-1])).astype(dtype)
    else:
        y = jax.random.normal(ky, (batch, model.sizes[-1]), dtype)
    return x, y


def _assert_agree(model, loss, seed, batch, dtype, rtol):
    key = jax.random.key(seed)
    params = model.init(key, dtype)
    # Scale the weights up so every activation works away from its linear part.
    params = jax.tree.map(lambda a: a * 1.5, params)
    x, y = _data(model, loss, jax.random.fold_in(key, 1), batch, dtype)
    # One small compiled program per case: far cheaper than op-by-op dispatch.
    # Strict promotion: jmlp's math must not silently mix dtypes.
    with jax.numpy_dtype_promotion("strict"):
        manual, auto = _both(jmlp.manual_grad(model, loss), jmlp.autodiff_grad(model, loss), params, x, y)
    assert jax.tree.structure(manual) == jax.tree.structure(params)
    for m, a in zip(jax.tree.leaves(manual), jax.tree.leaves(auto)):
        assert m.dtype == a.dtype == dtype
        scale = float(jnp.max(jnp.abs(a)))
        np.testing.assert_allclose(m, a, rtol=rtol, atol=rtol * scale)


@jax.jit
def _both(manual, auto, params, x, y):
    return manual(params, x, y), auto(params, x, y)


architectures = st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple)


@settings(max_examples=30, deadline=None)
@given(
    sizes=architectures,
    activation=st.sampled_from(sorted(jmlp.ACTIVATIONS)),
    loss=st.sampled_from(sorted(jmlp.LOSSES)),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 5),
)
def test_manual_equals_autodiff_float64(sizes, activation, loss, seed, batch):
    if jmlp.get_loss(loss).targets == "labels" and sizes[-1] < 2:
        sizes = sizes[:-1] + (2,)
    with jax.enable_x64(True):
        _assert_agree(jmlp.MLP(sizes, activation), loss, seed, batch, jnp.float64, 1e-12)


@pytest.mark.parametrize("activation", sorted(jmlp.ACTIVATIONS))
@pytest.mark.parametrize("loss", sorted(jmlp.LOSSES))
def test_manual_equals_autodiff_float32(activation, loss):
    _assert_agree(jmlp.MLP((5, 7, 6, 3), activation), loss, 3, 8, jnp.float32, 1e-5)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_kink_follows_jax(activation):
    # Pre-activations exactly 0: the first hidden unit sits on the kink for both samples.
    model = jmlp.MLP((2, 2, 1), activation)
    params = [
        {"W": jnp.array([[1.0, -1.0], [0.5, 0.25]]), "b": jnp.array([0.0, 0.1])},
        {"W": jnp.array([[0.7, -0.3]]), "b": jnp.array([0.2])},
    ]
    x = jnp.array([[1.0, 1.0], [2.0, 2.0]])
    y = jnp.array([[1.0], [-1.0]])
    z1 = model.forward(params, x)[1][0][1]
    assert bool(jnp.all(z1[:, 0] == 0))
    manual = jmlp.manual_grad(model, "half_squared_error")(params, x, y)
    auto = jmlp.autodiff_grad(model, "half_squared_error")(params, x, y)
    tree_allclose(manual, auto, rtol=0, atol=0)
    if activation == "relu":  # jax.nn.relu's derivative is 0 at 0: no gradient to row 0 of W1
        assert float(jnp.abs(manual[0]["W"][0]).sum()) == 0.0


def test_grad_functions_are_hashable_values():
    model = jmlp.MLP((2, 3, 1))
    assert jmlp.manual_grad(model, "mse") == jmlp.manual_grad(model, "mse")
    assert hash(jmlp.loss_fn(model, "mse")) == hash(jmlp.loss_fn(model, "mse"))
    assert jmlp.manual_grad(model, "mse") != jmlp.autodiff_grad(model, "mse")


def test_manual_grad_calls_no_autodiff(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("manual_grad must not call jax autodiff")

    for name in ("grad", "vjp", "jvp", "linearize", "value_and_grad"):
        monkeypatch.setattr(jax, name, forbidden)
    model = jmlp.MLP((3, 4, 2), "gelu")
    params = model.init(jax.random.key(0))
    jmlp.manual_grad(model, "softmax_cross_entropy")(params, jnp.ones((2, 3)), jnp.array([0, 1]))


def test_targets_that_would_broadcast_are_refused():
    model = jmlp.MLP((2, 3, 1))
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"needs y of shape \(4, 1\).*got \(4,\); reshape it with y\[:, None\]"):
        jmlp.manual_grad(model, "mse")(params, jnp.ones((4, 2)), jnp.ones(4))
    with pytest.raises(ValueError, match="integer labels"):
        jmlp.loss_fn(jmlp.MLP((2, 3)), "softmax_cross_entropy")(jmlp.MLP((2, 3)).init(jax.random.key(0)), jnp.ones((4, 2)), jnp.ones(4))
