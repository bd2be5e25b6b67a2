"""The update step and fit: optax optimizers, traced learning rate, compiled loop, tol."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tree_allclose

import jmlp
from jmlp import walkthrough as w
from jmlp.data import load
from jmlp.fit import _train
from jmlp.loop import epoch_order, minibatch
from jmlp.step import _update


@pytest.fixture
def regression(key):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (32, 3))
    y = jnp.tanh(x @ jax.random.normal(kw, (3, 1)))
    return x, y


def test_step_manual_equals_autodiff_and_plain_optax(key, regression):
    x, y = regression
    model = jmlp.MLP((3, 8, 1), "tanh")
    params = model.init(key)
    runs = {}
    for grad in ("manual", "autodiff"):
        step = jmlp.Step(model, "mse", "adam", grad)
        p, s = params, step.init(params, 1e-2)
        for _ in range(5):
            p, s, _ = step(p, s, x, y)
        runs[grad] = p
    # Reference: plain optax.adam with a Python-float learning rate and jax.grad.
    tx = optax.adam(1e-2)

    @jax.jit
    def reference_step(p, s):
        g = jax.grad(jmlp.loss_fn(model, "mse"))(p, x, y)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    for _ in range(5):
        p, s = reference_step(p, s)
    tree_allclose(runs["manual"], runs["autodiff"], rtol=1e-5, atol=1e-6)
    # Bitwise: only the learning rate is injected (optax #1532 is the trap).
    tree_allclose(runs["autodiff"], p, rtol=0, atol=0)


def test_new_learning_rate_never_recompiles(key, regression):
    x, y = regression
    model = jmlp.MLP((3, 4, 1), "tanh")
    params = model.init(key)
    step = jmlp.Step(model, "mse", "sgd")
    state = step.init(params, 0.1)
    step(params, state, x, y)
    before = _update._cache_size()
    out = [step(params, jmlp.set_learning_rate(state, lr), x, y)[0] for lr in (0.01, 0.5)]
    out.append(step(params, jmlp.Step(model, "mse", "sgd").init(params, 0.3), x, y)[0])  # an equal spec
    assert _update._cache_size() == before
    assert not np.allclose(out[0][0]["W"], out[1][0]["W"])  # the learning rate really changed

    jmlp.fit(model, params, x, y, loss="mse", optimizer="sgd", learning_rate=0.1, steps=20)
    compiled = _train._cache_size()
    with jax.log_compiles():
        for lr in (0.05, 0.2):
            jmlp.fit(model, params, x, y, loss="mse", optimizer=optax.sgd, learning_rate=lr, steps=20, tol=1e-3)
    assert _train._cache_size() == compiled


def test_fit_equals_a_python_loop_of_steps(key, regression):
    x, y = regression
    model = jmlp.MLP((3, 6, 1), "gelu")
    params = model.init(key)
    result = jmlp.fit(model, params, x, y, loss="mse", optimizer="adam", learning_rate=0.01, steps=25)
    step = jmlp.Step(model, "mse", "adam")
    p, s, losses = params, step.init(params, 0.01), []
    for _ in range(25):
        p, s, loss = step(p, s, x, y)
        losses.append(float(loss))
    assert result.steps == 25 and len(result.losses) == 25 and isinstance(result.losses, np.ndarray)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    tree_allclose(result.params, p, rtol=1e-5, atol=1e-6)


def test_fit_stops_at_tol_the_seed_walkthrough():
    x, y = jnp.array([w.X]), jnp.array([[w.Y]])
    result = jmlp.fit(w.MODEL, w.seed_params(jnp.float32), x, y, loss=w.LOSS, optimizer="sgd", learning_rate=0.1, steps=10_000, tol=1e-6)
    assert result.converged and result.steps < 200
    assert result.losses[-1] < 1e-6 <= result.losses[-2]  # stops after the first step below tol
    assert float(jmlp.loss_fn(w.MODEL, w.LOSS)(result.params, x, y)) < 1e-6
    long = jmlp.fit(w.MODEL, w.seed_params(jnp.float32), x, y, loss=w.LOSS, optimizer="sgd", learning_rate=0.1, steps=300)
    assert long.steps == 300 and not long.converged


def test_minibatches_shuffle_each_epoch_and_converge(key):
    data = load("digits", val_fraction=0.2, standardize=True)
    x, y = jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train, jnp.int32)
    model = jmlp.MLP((64, 32, 10))
    params = model.init(key)
    kwargs = dict(loss="softmax_cross_entropy", optimizer="adam", learning_rate=3e-3, steps=300, batch_size=128)
    a = jmlp.fit(model, params, x, y, key=jax.random.key(1), **kwargs)
    b = jmlp.fit(model, params, x, y, key=jax.random.key(1), **kwargs)
    c = jmlp.fit(model, params, x, y, key=jax.random.key(2), **kwargs)
    np.testing.assert_array_equal(a.losses, b.losses)  # deterministic given the key
    assert not np.array_equal(a.losses, c.losses)  # and the key matters
    x_val, y_val = jnp.asarray(data.x_val, jnp.float32), jnp.asarray(data.y_val)
    accuracy = float(jnp.mean(jnp.argmax(model.apply(a.params, x_val), -1) == y_val))
    assert accuracy > 0.9


def test_minibatch_epochs_are_permutations():
    x = jnp.arange(10.0)[:, None]
    key = jax.random.key(0)
    seen = [minibatch(x, x, epoch_order(key, i // 3, 10), i, 3)[0][:, 0] for i in range(6)]
    epoch0, epoch1 = jnp.concatenate(seen[:3]), jnp.concatenate(seen[3:])
    assert len(set(np.asarray(epoch0).tolist())) == 9  # 3 batches of 3, no repeats within an epoch
    assert not np.array_equal(epoch0, epoch1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rate=0.0), "learning_rate must be positive and finite, got 0.0"),
        (dict(learning_rate=float("nan")), "learning_rate must be positive and finite, got nan"),
        (dict(learning_rate=-1), "got -1"),
        (dict(learning_rate="fast"), "learning_rate must be a number, got 'fast'"),
        (dict(optimizer="adma"), "unknown optimizer 'adma'; did you mean 'adam'"),
        (dict(optimizer=optax.sgd(0.1)), "not an already built transformation"),
        (dict(grad="manul"), "unknown grad 'manul'; did you mean 'manual'"),
        (dict(loss="mse2"), "unknown loss 'mse2'; did you mean 'mse'"),
        (dict(steps=0), "steps must be a positive integer, got 0"),
        (dict(tol=-1.0), "tol must be positive and finite, got -1.0"),
        (dict(batch_size=100), "batch_size 100 is larger than the 32 training rows"),
        (dict(x=jnp.ones((32, 4))), r"x has shape \(32, 4\) but the model's input width is 3"),
        (dict(x=jnp.ones((32, 3)).at[5, 1].set(jnp.nan)), r"x holds a non-finite value nan at index \(5, 1\)"),
        (dict(y=jnp.ones((32, 1)).at[2, 0].set(jnp.inf)), r"y holds a non-finite value inf at index \(2, 0\)"),
        (dict(y=jnp.ones((31, 1))), "x has 32 rows but y has 31 rows"),
        (dict(optimizer_options={"momentun": 0.9}), "optimizer options \\['momentun'\\] don't fit sgd"),
    ],
)
def test_fit_bad_input(key, regression, kwargs, message):
    x, y = regression
    model = jmlp.MLP((3, 4, 1))
    args = dict(x=x, y=y, loss="mse", optimizer="sgd", learning_rate=0.1, steps=5)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        jmlp.fit(model, model.init(key), args.pop("x"), args.pop("y"), **args)


def test_divergence_stops_and_keeps_the_last_finite_state():
    x, y = jnp.array([w.X]), jnp.array([[w.Y]])
    result = jmlp.fit(w.MODEL, w.seed_params(jnp.float32), x, y, loss=w.LOSS, optimizer="sgd", learning_rate=3.0, steps=500)
    assert result.diverged and not result.converged and result.steps < 500
    assert not np.isfinite(result.losses[-1]) or result.losses[-1] > 1e6 * result.losses[0]
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(result.params))
