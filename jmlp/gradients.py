"""The loss as a pure function, and two interchangeable gradients of it.

``manual_grad`` is the seed's hand derivation generalised to any depth:
starting from dL/dŷ (= dL/dz_L, the last layer being linear) it walks back
with ``dW = dzᵀ h_in``, ``db = Σ_batch dz``, ``dh = dz W`` and
``dz = dh ⊙ act'(z)``. It calls no jax.grad/vjp/jvp. ``autodiff_grad`` is
``jax.grad`` of the same loss. Both have the signature ``(params, x, y) ->
grads`` and are frozen dataclasses: equal arguments give equal (hashable)
functions, so passing one to jit twice compiles once.
"""

import dataclasses

import jax

from .activations import get_activation
from .errors import unknown_name
from .losses import check_targets, get_loss
from .model import MLP


def _loss_name(loss) -> str:
    return get_loss(loss).name


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class LossFn:
    """``(params, x, y) -> scalar``: the model's loss on a batch."""

    model: MLP
    loss: str

    def __call__(self, params, x, y):
        loss = get_loss(self.loss)
        y_hat = self.model.apply(params, x)
        check_targets(loss, y_hat.shape, y)
        return loss.fn(y_hat, y)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class ManualGrad:
    """``(params, x, y) -> grads``: the hand-derived reverse pass."""

    model: MLP
    loss: str

    def __call__(self, params, x, y):
        return backward(self.model, self.loss, params, x, y)[0]

    def value_and_grad(self, params, x, y):
        """``(loss, grads)`` from one forward pass, as ``jax.value_and_grad``."""
        grads, trace = backward(self.model, self.loss, params, x, y)
        return get_loss(self.loss).fn(trace["y_hat"], y), grads


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class AutodiffGrad:
    """``(params, x, y) -> grads``: ``jax.grad`` of the loss."""

    model: MLP
    loss: str

    def __call__(self, params, x, y):
        return jax.grad(LossFn(self.model, self.loss))(params, x, y)

    def value_and_grad(self, params, x, y):
        """``(loss, grads)``: ``jax.value_and_grad`` of the loss."""
        return jax.value_and_grad(LossFn(self.model, self.loss))(params, x, y)


def loss_fn(model: MLP, loss) -> LossFn:
    """The pure loss ``(params, x, y) -> scalar`` for ``model`` and a loss name.

    >>> model = MLP((2, 2, 1))
    >>> params = model.init(jax.random.key(0))
    >>> L = loss_fn(model, "half_squared_error")
    >>> L(params, jax.numpy.ones((4, 2)), jax.numpy.zeros((4, 1))).shape
    ()
    """
    return LossFn(model, _loss_name(loss))


def manual_grad(model: MLP, loss) -> ManualGrad:
    """The hand-derived gradient of ``loss_fn(model, loss)``, a drop-in for jax.grad.

    >>> import jax.numpy as jnp
    >>> model = MLP((2, 2, 1))
    >>> params = [{"W": jnp.array([[0.5, 0.2], [0.3, 0.4]]), "b": jnp.array([0.1, 0.1])},
    ...           {"W": jnp.array([[0.6, 0.7]]), "b": jnp.array([0.1])}]
    >>> g = manual_grad(model, "half_squared_error")(params, jnp.array([[2.0, 3.0]]), jnp.array([[10.0]]))
    >>> [round(float(v), 4) for v in g[1]["W"][0]]  # the seed's dW2
    [-12.835, -14.345]
    """
    return ManualGrad(model, _loss_name(loss))


def autodiff_grad(model: MLP, loss) -> AutodiffGrad:
    """``jax.grad(loss_fn(model, loss))``, with the same signature as manual_grad.

    >>> import jax.numpy as jnp
    >>> model = MLP((2, 3, 1), "tanh")
    >>> params = model.init(jax.random.key(0))
    >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    >>> a = autodiff_grad(model, "mse")(params, x, y)
    >>> m = manual_grad(model, "mse")(params, x, y)
    >>> bool(jnp.allclose(a[0]["W"], m[0]["W"]))
    True
    """
    return AutodiffGrad(model, _loss_name(loss))


GRADS = {"manual": manual_grad, "autodiff": autodiff_grad}


def grad_fn(model: MLP, loss, grad: str = "manual"):
    """The gradient function named by ``grad``: ``"manual"`` or ``"autodiff"``."""
    if grad not in GRADS:
        raise unknown_name("grad", grad, GRADS)
    return GRADS[grad](model, loss)


def backward(model: MLP, loss, params, x, y):
    """The hand-derived reverse pass, keeping every intermediate.

    Returns ``(grads, trace)`` where ``trace`` has, per layer ``l``, the
    forward ``z`` and ``h`` and the backward ``dz`` (dL/dz) and ``dh``
    (dL/dh of the layer's input): what ``jmlp explain`` prints.
    """
    loss = get_loss(loss)
    act = get_activation(model.activation)
    y_hat, cache = model.forward(params, x)
    check_targets(loss, y_hat.shape, y)
    dy_hat = loss.grad(y_hat, y)
    dz = dy_hat  # the last layer is linear: dL/dz_L = dL/dŷ
    grads = [None] * model.depth
    trace = [None] * model.depth
    for l in reversed(range(model.depth)):
        h_in, z = cache[l]
        W = params[l]["W"]
        grads[l] = {"W": dz.T @ h_in, "b": dz.sum(axis=0)}
        dh_in = dz @ W
        trace[l] = {"z": z, "dz": dz, "h_in": h_in, "dh_in": dh_in}
        if l > 0:
            dz = dh_in * act.grad(cache[l - 1][1])
    return grads, {"y_hat": y_hat, "dy_hat": dy_hat, "layers": trace}
