"""The MLP spec: plain-pytree params, init schemes, static under jit, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmlp


def test_params_are_a_plain_list_of_dicts(key):
    params = jmlp.MLP((3, 5, 2), "tanh").init(key)
    assert isinstance(params, list) and all(set(p) == {"W", "b"} for p in params)
    assert [p["W"].shape for p in params] == [(5, 3), (2, 5)]
    assert all(p["W"].dtype == jnp.float32 for p in params)
    assert all(float(jnp.abs(p["b"]).max()) == 0 for p in params)


def test_init_dtype(key):
    with jax.enable_x64(True):
        params = jmlp.MLP((3, 2)).init(key, jnp.float64)
        assert params[0]["W"].dtype == jnp.float64


@pytest.mark.parametrize(
    "activation, scheme, variance",
    [("relu", "auto", 2 / 400), ("tanh", "auto", 2 / (400 + 300)), ("tanh", "he", 2 / 400), ("relu", "glorot", 2 / 700)],
)
def test_init_scheme_variance(key, activation, scheme, variance):
    W = jmlp.MLP((400, 300), activation, scheme).init(key)[0]["W"]
    assert float(jnp.var(W)) == pytest.approx(variance, rel=0.05)


def test_spec_is_hashable_and_static_under_jit(key):
    model = jmlp.MLP([2, 2, 1])
    assert model.sizes == (2, 2, 1) and model == jmlp.MLP((2, 2, 1)) and hash(model) == hash(jmlp.MLP((2, 2, 1)))
    params = model.init(key)
    x = jnp.ones((3, 2))
    by_static = jax.jit(lambda m, p, x: m.apply(p, x), static_argnums=0)(model, params, x)
    as_pytree = jax.jit(lambda m, p, x: m.apply(p, x))(model, params, x)  # registered static
    np.testing.assert_array_equal(by_static, as_pytree)
    with pytest.raises(dataclasses_frozen()):
        model.sizes = (1, 1)


def dataclasses_frozen():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_last_layer_is_linear():
    model = jmlp.MLP((1, 1, 1), "relu")
    params = [{"W": jnp.array([[1.0]]), "b": jnp.array([0.0])}, {"W": jnp.array([[-1.0]]), "b": jnp.array([0.0])}]
    assert float(model.apply(params, jnp.array([[2.0]]))[0, 0]) == -2.0  # not clipped by relu


@pytest.mark.parametrize(
    "args, message",
    [
        (((2,),), "at least an input and an output"),
        (((2, 0, 1),), "positive integers, got 0"),
        (((2, 2.5, 1),), "positive integers, got 2.5"),
        (("21",), "sequence of layer widths"),
        (((2, 1), "rleu"), "unknown activation 'rleu'; did you mean 'relu'"),
        (((2, 1), "relu", "xavier"), "unknown weight_init 'xavier'"),
    ],
)
def test_bad_specs(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        jmlp.MLP(*args)


def test_shape_errors_name_the_leaf(key):
    model = jmlp.MLP((2, 3, 1))
    params = model.init(key)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\).*got \(4, 3\)"):
        model.apply(params, jnp.ones((4, 3)))
    params[1]["W"] = jnp.ones((1, 4))
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\] has shape \(1, 4\), expected \(1, 3\)"):
        model.apply(params, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="list of 2 layers"):
        model.apply(params[:1], jnp.ones((4, 2)))
