"""check_grad: manual_grad passes everywhere; wrong gradients fail at the right element; FD says when it can't be trusted."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmlp
from jmlp import cli, gradcheck_cli
from jmlp.check import check_grad
from jmlp.gradcheck_cli import ARCHITECTURES, check_mlp
from jmlp.testing import assert_grad_close


# The matrix runs --all's own architectures, so the CLI test after it finds every primitive compiled.
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", sorted(jmlp.LOSSES))
@pytest.mark.parametrize("activation", sorted(jmlp.ACTIVATIONS))
@pytest.mark.parametrize("sizes", ARCHITECTURES, ids=lambda s: "-".join(map(str, s)))
def test_manual_grad_passes(sizes, activation, loss, dtype):
    report = check_mlp(sizes, activation, loss, dtype=dtype)
    assert report.ok, report.message
    assert report.fd_agrees and all(r.fd_reliable for r in report.rows), report.table()
    assert report.max_rel_error < 1e-12
    assert report.message.startswith("manual agrees with autodiff")
    assert [r.path for r in report.rows] == [f"[{l}]['{k}']" for l in range(len(sizes) - 1) for k in "Wb"]


# Wrong gradients, built around manual_grad, on a 3-layer tanh net (tanh' != 1 anywhere), shaped as in --all.
MODEL = jmlp.MLP(ARCHITECTURES[1], "tanh")
LOSS = "half_squared_error"
MANUAL = jmlp.manual_grad(MODEL, LOSS)
LOSS_FN = jmlp.loss_fn(MODEL, LOSS)


@pytest.fixture(scope="module")
def problem():
    params = MODEL.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jax.random.normal(jax.random.key(2), (8, 2))
    return params, x, y


def sign_flip(params, x, y):
    g = MANUAL(params, x, y)
    g[1] = {**g[1], "W": -g[1]["W"]}
    return g


def one_element_off(params, x, y):
    g = MANUAL(params, x, y)
    g[0] = {**g[0], "W": g[0]["W"].at[1, 2].multiply(1.03)}
    return g


def bias_summed(params, x, y):
    grads, trace = jmlp.backward(MODEL, LOSS, params, x, y)
    # Per-example dL_i/dz summed: the 1/batch of the mean is lost.
    dz = trace["layers"][0]["dz"] * x.shape[0]
    grads[0] = {**grads[0], "b": dz.sum(axis=0)}
    return grads


def hand_backward(model, loss, act_grad):
    """The reverse pass written out again, with the activation derivative given."""

    def grad(params, x, y):
        y_hat, cache = model.forward(params, x)
        dz = jmlp.get_loss(loss).grad(y_hat, y)
        grads = [None] * model.depth
        for l in reversed(range(model.depth)):
            grads[l] = {"W": dz.T @ cache[l][0], "b": dz.sum(axis=0)}
            if l > 0:
                dz = (dz @ params[l]["W"]) * act_grad(cache[l - 1][1])
        return grads

    return grad


def failing(report):
    return [r.path for r in report.rows if not r.passed]


def assert_names_its_element(report, grads, params, x, y):
    """The message's element is a real disagreement, with the values there."""
    row = max((r for r in report.rows if not r.passed), key=lambda r: r.rel_error)
    assert report.message.startswith(f"candidate vs autodiff at {row.where}: {row.candidate:.6g} vs {row.autodiff:.6g}")
    leaf = dict((jax.tree_util.keystr(k), v) for k, v in jax.tree_util.tree_flatten_with_path(grads)[0])[row.path]
    with jax.enable_x64(True):
        auto = jax.grad(LOSS_FN)(jax.tree.map(lambda a: a.astype(jnp.float64), params), x.astype(jnp.float64), y.astype(jnp.float64))
    auto_leaf = dict((jax.tree_util.keystr(k), v) for k, v in jax.tree_util.tree_flatten_with_path(auto)[0])[row.path]
    assert float(leaf[row.index]) == pytest.approx(row.candidate, rel=1e-4)
    assert float(auto_leaf[row.index]) == pytest.approx(row.autodiff, rel=1e-12)
    assert abs(row.candidate - row.autodiff) > 1e-3 * abs(row.autodiff)


def test_hand_backward_is_right_with_the_right_derivative(problem):
    report = check_grad(hand_backward(MODEL, LOSS, jmlp.get_activation("tanh").grad), LOSS_FN, *problem)
    assert report.ok, report.message


def test_sign_flip_in_one_layer_fails_there(problem):
    report = check_grad(sign_flip, LOSS_FN, *problem)
    assert not report.ok
    assert failing(report) == ["[1]['W']"]
    row = report.rows[2]
    assert row.failures == 25 and row.candidate == pytest.approx(-row.autodiff, rel=1e-15)
    assert "siding with autodiff" in report.message and "25 of 62 elements fail in 1 leaf" in report.message
    assert_names_its_element(report, sign_flip(*problem), *problem)


def test_one_wrong_element_is_named(problem):
    report = check_grad(one_element_off, LOSS_FN, *problem)
    assert failing(report) == ["[0]['W']"] and report.rows[0].failures == 1
    assert report.rows[0].index == (1, 2)
    assert report.message.startswith("candidate vs autodiff at [0]['W'][1, 2]: ")
    assert report.rows[0].candidate == pytest.approx(1.03 * report.rows[0].autodiff)


def test_missing_activation_derivative_fails_below_the_last_layer(problem):
    wrong = hand_backward(MODEL, LOSS, jnp.ones_like)
    report = check_grad(wrong, LOSS_FN, *problem)
    assert failing(report) == ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"]
    assert_names_its_element(report, wrong(*problem), *problem)


def test_bias_summed_instead_of_averaged(problem):
    report = check_grad(bias_summed, LOSS_FN, *problem)
    assert failing(report) == ["[0]['b']"]
    row = report.rows[1]
    assert row.candidate == pytest.approx(8 * row.autodiff)  # the batch size
    assert_names_its_element(report, bias_summed(*problem), *problem)


def test_directional_mode_catches_the_sign_flip(problem):
    report = check_grad(sign_flip, LOSS_FN, *problem, mode="directional")
    assert not report.ok and failing(report) == ["[1]['W']"]
    assert len(report.directions) == 8 and not all(d.passed for d in report.directions)
    assert report.message.startswith("candidate vs autodiff at [1]['W'][")
    # The FD witness along each direction sides with autodiff, not with the flipped gradient.
    assert all(d.finite_difference == pytest.approx(d.autodiff, rel=1e-6) for d in report.directions)
    assert all(r.fd_status == "not run (directional)" for r in report.rows)
    assert "direction" in report.table()


def test_directional_mode_passes_manual_grad(problem):
    report = check_grad(MANUAL, LOSS_FN, *problem, mode="directional", directions=3, key=jax.random.key(7))
    assert report.ok and report.fd_agrees and len(report.directions) == 3
    assert report.message.endswith("and with finite differences along all 3 random directions")


# The seed's 2-2-1 ReLU net with the first hidden unit exactly on its kink for both samples.
KINK_MODEL = jmlp.MLP((2, 2, 1), "relu")
KINK_PARAMS = [
    {"W": jnp.array([[1.0, -1.0], [0.5, 0.25]]), "b": jnp.array([0.0, 0.1])},
    {"W": jnp.array([[0.7, -0.3]]), "b": jnp.array([0.2])},
]
KINK_X = jnp.array([[1.0, 1.0], [2.0, 2.0]])
KINK_Y = jnp.array([[1.0], [-1.0]])


def test_relu_kink_is_unreliable_fd_not_a_failure():
    loss = jmlp.loss_fn(KINK_MODEL, LOSS)
    report = check_grad(jmlp.manual_grad(KINK_MODEL, LOSS), loss, KINK_PARAMS, KINK_X, KINK_Y)
    assert report.ok and report.fd_agrees
    assert [r.fd_reliable for r in report.rows] == [False, False, True, True]
    assert report.rows[0].fd_status == "unreliable: kink at 2 of 4" and report.rows[0].index[0] == 0
    assert "unreliable (a kink within eps" in report.message


def test_disagreeing_with_autodiff_fails_even_where_fd_is_unreliable():
    # relu'(0) = 1 instead of jax's 0: wrong exactly at the kink, where FD can't judge.
    wrong = hand_backward(KINK_MODEL, LOSS, lambda z: (z >= 0).astype(z.dtype))
    report = check_grad(wrong, jmlp.loss_fn(KINK_MODEL, LOSS), KINK_PARAMS, KINK_X, KINK_Y)
    assert not report.ok and failing(report) == ["[0]['W']", "[0]['b']"]
    assert report.rows[0].index[0] == 0 and "unreliable there" in report.message


def test_fd_disagreeing_with_both_is_reported():
    @jax.custom_jvp
    def sum_of_squares(w):
        return jnp.sum(w**2)

    @sum_of_squares.defjvp
    def _(primals, tangents):
        (w,), (t,) = primals, tangents
        return sum_of_squares(w), jnp.sum(3 * w * t)  # a wrong rule: 3w, not 2w

    def loss(p, x, y):
        return sum_of_squares(p["w"]) + jnp.sum(p["v"] * x)

    params, x = {"w": jnp.array([0.5, -1.0]), "v": jnp.array([1.0, 2.0])}, jnp.array([1.0, 3.0])
    report = check_grad(jax.grad(loss), loss, params, x, None)
    assert report.ok and not report.fd_agrees  # the candidate is autodiff itself
    assert "finite differences disagree with both at ['w']" in report.message
    right = check_grad(lambda p, x, y: {"w": 2 * p["w"], "v": x}, loss, params, x, None)
    assert not right.ok and "siding with candidate" in right.message


def test_a_loss_too_flat_for_float64_is_unreliable_fd():
    def loss(p, x, y):
        return 1e8 + 1e-6 * jnp.sum(p["w"] ** 2)

    report = check_grad(jax.grad(loss), loss, {"w": jnp.array([0.5, -1.0, 2.0])}, None, None)
    assert report.ok and report.rows[0].fd_status == "unreliable: too flat at 3 of 3"
    assert "too flat for float64" in report.message


def test_chunks_of_perturbations_cover_every_element(monkeypatch):
    # Chunks of 3 perturbed vectors for 2·7 evaluations: the last chunk wraps round.
    monkeypatch.setattr(jmlp.check, "CHUNK_ELEMENTS", 7 * 3)

    def loss(p, x, y):
        return jnp.sum(jnp.sin(p["w"]) * x) + jnp.sum(p["v"] ** 3)

    params, x = {"w": jnp.arange(4.0), "v": jnp.array([0.5, -1.0, 2.0])}, jnp.array([1.0, -2.0, 3.0, 0.5])
    report = check_grad(jax.grad(loss), loss, params, x, None)
    assert report.ok and report.fd_agrees and all(r.fd_reliable for r in report.rows)
    assert max(r.fd_rel_error for r in report.rows) < 1e-8


def test_flax_linen_params():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="out")(nn.tanh(nn.Dense(5, name="hidden")(x)))

    net = Net()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3), np.float32), np.zeros((8, 2), np.float32)
    # Drawn as net.init(key, x) lays them out (its random init would compile again for every shape).
    params = jax.eval_shape(net.init, jax.random.key(0), x)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), params)

    def loss(p, x, y):
        return jnp.mean((net.apply(p, x) - y) ** 2)

    report = check_grad(jax.grad(loss), loss, params, x, y)
    assert report.ok and report.fd_agrees, report.message
    assert [r.path for r in report.rows] == [f"['params']['{m}']['{k}']" for m in ("hidden", "out") for k in ("bias", "kernel")]

    def flipped(p, x, y):
        g = jax.grad(loss)(p, x, y)
        return {"params": {**g["params"], "hidden": {**g["params"]["hidden"], "kernel": -g["params"]["hidden"]["kernel"]}}}

    assert failing(check_grad(flipped, loss, params, x, y)) == ["['params']['hidden']['kernel']"]


@pytest.mark.parametrize("x64", [False, True])
def test_x64_flag_is_left_as_found(x64, problem):
    def raising(params, x, y):
        raise ZeroDivisionError("in the loss")

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", x64)
    try:
        report = check_grad(MANUAL, LOSS_FN, *problem)
        assert jax.config.jax_enable_x64 is x64
        with pytest.raises(ZeroDivisionError):
            check_grad(MANUAL, raising, *problem)
        assert jax.config.jax_enable_x64 is x64
    finally:
        jax.config.update("jax_enable_x64", before)
    assert report.ok and type(report.rows[0].candidate) is float


def test_assert_grad_close(problem):
    assert assert_grad_close(MANUAL, LOSS_FN, *problem).ok
    with pytest.raises(AssertionError, match=r"candidate vs autodiff at \[1\]\['W'\]\[") as e:
        assert_grad_close(sign_flip, LOSS_FN, *problem)
    assert "FAIL" in str(e.value) and "finite differences" in str(e.value)


def test_report_is_json_and_a_table(problem):
    report = check_grad(one_element_off, LOSS_FN, *problem, rtol=1e-6, eps=1e-5)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["ok"] is False and d["rtol"] == 1e-6 and d["eps"] == 1e-5 and d["fd_rtol"] == 1e-3
    assert d["atol"] == pytest.approx(1e-6 * d["scale"]) and d["message"] == report.message
    assert d["rows"][0]["index"] == [1, 2] and d["rows"][0]["passed"] is False
    lines = report.table().splitlines()
    assert lines[0].split()[:3] == ["leaf", "worst", "candidate"] and len(lines) == 2 + 6
    assert "FAIL" in lines[2] and "[1, 2]" in lines[2]


def test_float32_candidate_gets_a_float32_tolerance(problem):
    def in_float32(params, x, y):
        return MANUAL(jax.tree.map(lambda a: a.astype(jnp.float32), params), x.astype(jnp.float32), y.astype(jnp.float32))

    report = check_grad(in_float32, LOSS_FN, *problem)
    assert report.ok and report.rtol == 1e-4, report.message


def test_bad_arguments_are_refused(problem):
    params, x, y = problem
    with pytest.raises(ValueError, match="unknown mode 'ful'; did you mean 'full'"):
        check_grad(MANUAL, LOSS_FN, params, x, y, mode="ful")
    with pytest.raises(ValueError, match="eps must be positive"):
        check_grad(MANUAL, LOSS_FN, params, x, y, eps=0)
    with pytest.raises(ValueError, match=r"candidate returned shape \(5,\) at \[0\]\['W'\], where params have \(5, 3\)"):
        check_grad(lambda p, x, y: [{"W": p[0]["b"], "b": p[0]["b"]}, *MANUAL(p, x, y)[1:]], LOSS_FN, params, x, y)
    with pytest.raises(TypeError, match=r"params leaf \['w'\] has dtype int32"):
        check_grad(lambda p, x, y: p, lambda p, x, y: 0.0, {"w": jnp.arange(3)}, None, None)


# The CLI, through jmlp.cli.main as the `jmlp` command runs it.


def test_cli_gradcheck_passes(capsys):
    assert cli.main(["gradcheck", "--sizes", "2,4,1"]) == 0
    out = capsys.readouterr().out
    assert "manual agrees with autodiff" in out and "[0]['W']" in out and "FAIL" not in out


def test_cli_gradcheck_json(capsys):
    argv = ["gradcheck", "--sizes", "2,4,1", "--activation", "tanh", "--mode", "directional", "--dtype", "float64", "--json"]
    assert cli.main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sizes"] == [2, 4, 1] and d["activation"] == "tanh" and d["dtype"] == "float64" and d["report"]["ok"] is True
    assert len(d["report"]["directions"]) == 8


def test_cli_gradcheck_all(capsys):
    assert cli.main(["gradcheck", "--all"]) == 0
    out = capsys.readouterr().out
    n = len(ARCHITECTURES) * len(jmlp.ACTIVATIONS) * len(jmlp.LOSSES)
    assert out.splitlines()[0].split()[:4] == ["sizes", "activation", "loss", "rel"]
    assert len(out.splitlines()) == 2 + n + 1 and f"{n} pass, 0 fail" in out


def test_cli_gradcheck_exits_1_when_a_check_fails(capsys, monkeypatch):
    def wrong(model, loss):
        manual = jmlp.manual_grad(model, loss)
        return lambda params, x, y: jax.tree.map(lambda g: -g, manual(params, x, y))

    monkeypatch.setattr(gradcheck_cli, "manual_grad", wrong)
    assert cli.main(["gradcheck", "--sizes", "2,4,1"]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sizes", "2,x,1"], "argument --sizes: expected comma-separated layer widths such as 2,4,1, got '2,x,1'"),
        (["--sizes", "2,0,1"], "sizes must be positive integers, got 0"),
        (["--activation", "rleu"], "unknown activation 'rleu'; did you mean 'relu'?"),
        (["--loss", "softmax_cross_entropy"], "loss 'softmax_cross_entropy' needs an output width of at least 2, got sizes 2,4,1"),
        (["--mode", "ful"], "unknown --mode 'ful'; did you mean 'full'?"),
        (["--batch", "0"], "batch must be a positive integer, got 0"),
        (["--all", "--sizes", "2,4,1"], "--all sweeps every architecture, activation and loss; drop --sizes"),
    ],
)
def test_cli_gradcheck_bad_input_exits_2(argv, message, capsys):
    assert cli.main(["gradcheck", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jmlp: error: ") and message in err and err.count("\n") == 1
