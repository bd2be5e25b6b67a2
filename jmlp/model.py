"""The MLP: a frozen, hashable spec; parameters are a plain pytree.

Parameters are a list with one ``{"W": (fan_out, fan_in), "b": (fan_out,)}``
dict per layer, the seed's W1 orientation, so ``z = h @ W.T + b`` for a batch
of row vectors ``h``. Hidden layers apply the activation; the last layer is
linear (the seed's ŷ = z2).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .activations import ACTIVATIONS, get_activation
from .errors import BadType, BadValue, unknown_name

Params = list  # [{"W": Array, "b": Array}, ...]

# He init suits the ReLU family (unbounded, half-zero); Glorot suits the rest.
RELU_FAMILY = ("relu", "leaky_relu", "gelu", "softplus")
WEIGHT_INITS = {
    "he": jax.nn.initializers.he_normal(in_axis=-1, out_axis=-2),
    "glorot": jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2),
}


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class MLP:
    """A multilayer perceptron spec, e.g. ``MLP((2, 2, 1), "relu")``.

    ``weight_init`` is ``"he"`` (truncated normal, variance 2/fan_in),
    ``"glorot"`` (uniform, variance 2/(fan_in+fan_out)) or ``"auto"``: He for
    relu, leaky_relu, gelu and softplus, Glorot otherwise. Biases start at 0.
    The spec is hashable and registered as a static pytree, so it can be a jit
    argument as it is.

    >>> model = MLP((2, 2, 1), "relu")
    >>> params = model.init(jax.random.key(0))
    >>> [p["W"].shape for p in params]
    [(2, 2), (1, 2)]
    >>> model.apply(params, jnp.ones((5, 2))).shape
    (5, 1)
    """

    sizes: tuple[int, ...]
    activation: str = "relu"
    weight_init: str = "auto"

    def __post_init__(self):
        if isinstance(self.sizes, (str, bytes)) or not hasattr(self.sizes, "__iter__"):
            raise BadType(f"sizes must be a sequence of layer widths, got {self.sizes!r}")
        sizes = tuple(self.sizes)
        if len(sizes) < 2:
            raise BadValue(f"sizes needs at least an input and an output width, got {sizes}")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s < 1:
                raise BadValue(f"sizes must be positive integers, got {s!r} in {sizes}")
        object.__setattr__(self, "sizes", sizes)
        if self.activation not in ACTIVATIONS:
            raise unknown_name("activation", self.activation, ACTIVATIONS)
        if self.weight_init not in (*WEIGHT_INITS, "auto"):
            raise unknown_name("weight_init", self.weight_init, (*WEIGHT_INITS, "auto"))

    @property
    def depth(self) -> int:
        """Number of affine layers."""
        return len(self.sizes) - 1

    def init(self, key, dtype=jnp.float32) -> Params:
        """Random parameters: a list of ``{"W", "b"}`` dicts, one per layer.

        >>> [p["b"].shape for p in MLP((3, 4, 2)).init(jax.random.key(0))]
        [(4,), (2,)]
        """
        scheme = self.weight_init
        if scheme == "auto":
            scheme = "he" if self.activation in RELU_FAMILY else "glorot"
        w_init = WEIGHT_INITS[scheme]
        keys = jax.random.split(key, self.depth)
        return [
            {"W": w_init(k, (fan_out, fan_in), dtype), "b": jnp.zeros((fan_out,), dtype)}
            for k, fan_in, fan_out in zip(keys, self.sizes[:-1], self.sizes[1:])
        ]

    def check(self, params: Any, x) -> None:
        """Raise a ValueError naming the first leaf or input that doesn't fit the spec."""
        if not isinstance(params, (list, tuple)) or len(params) != self.depth:
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise BadValue(f"params must be a list of {self.depth} layers for sizes {self.sizes}, got {got}")
        for i, (layer, fan_in, fan_out) in enumerate(zip(params, self.sizes[:-1], self.sizes[1:])):
            if not isinstance(layer, dict) or set(layer) != {"W", "b"}:
                raise BadValue(f"params[{i}] must be a dict with keys 'W' and 'b', got {layer!r:.80}")
            for name, shape in (("W", (fan_out, fan_in)), ("b", (fan_out,))):
                got = tuple(jnp.shape(layer[name]))
                if got != shape:
                    raise BadValue(
                        f"params[{i}][{name!r}] has shape {got}, expected {shape} for sizes {self.sizes}"
                    )
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != self.sizes[0]:
            raise BadValue(
                f"x must have shape (batch, {self.sizes[0]}) for sizes {self.sizes}, got {tuple(jnp.shape(x))}"
            )

    def forward(self, params: Params, x):
        """The forward pass that keeps what backprop needs.

        Returns ``(y_hat, cache)`` where ``cache[l] = (h_in, z)``: the layer's
        input and its pre-activation.
        """
        self.check(params, x)
        act = get_activation(self.activation)
        h, cache = x, []
        for i, layer in enumerate(params):
            z = h @ layer["W"].T + layer["b"]
            cache.append((h, z))
            h = z if i == self.depth - 1 else act.fn(z)
        return h, cache

    def apply(self, params: Params, x):
        """Map ``x`` of shape ``(batch, sizes[0])`` to ``(batch, sizes[-1])``.

        >>> params = [{"W": jnp.array([[0.5, 0.2], [0.3, 0.4]]), "b": jnp.array([0.1, 0.1])},
        ...           {"W": jnp.array([[0.6, 0.7]]), "b": jnp.array([0.1])}]
        >>> MLP((2, 2, 1)).apply(params, jnp.array([[2.0, 3.0]]))  # the seed's ŷ
        Array([[2.45]], dtype=float32)
        """
        return self.forward(params, x)[0]
