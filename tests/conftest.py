import jax
import numpy as np
import pytest

# Strict dtype promotion is applied around jmlp's own math in test_gradients
# (optax's Adam mixes int and float internally, so not suite-wide).


@pytest.fixture
def key():
    return jax.random.key(0)


def tree_allclose(x, y, *, rtol, atol=0.0):
    """Leaf-by-leaf allclose; the error names the leaf path."""
    paths = jax.tree_util.tree_flatten_with_path(x)[0]
    for (path, a), b in zip(paths, jax.tree.leaves(y), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))
    return True
