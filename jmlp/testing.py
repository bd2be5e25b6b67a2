"""Assertions for users' own test suites."""

from .check import GradCheckReport, check_grad


def assert_grad_close(grad_fn, loss_fn, params, x, y, **kwargs) -> GradCheckReport:
    """Assert that ``grad_fn`` agrees with ``jax.grad(loss_fn)``; raise AssertionError with the report if not.

    ``kwargs`` go to ``check_grad`` (``mode``, ``rtol``, ``atol``, ``eps``,
    ...). The error holds the report's message and table; on success the
    report is returned, e.g. to look at the finite-difference witness too.

    >>> import jax, jax.numpy as jnp
    >>> def loss(p, x, y):
    ...     return jnp.sum((p["w"] * x - y) ** 2)
    >>> def wrong(p, x, y):  # the factor 2 forgotten
    ...     return {"w": (p["w"] * x - y) * x}
    >>> assert_grad_close(wrong, loss, {"w": jnp.array([1.0, 2.0])}, jnp.array([1.0, 1.0]), jnp.zeros(2))
    Traceback (most recent call last):
    ...
    AssertionError: candidate vs autodiff at ['w'][1]: 2 vs 4 (finite differences: 4, siding with autodiff); ...
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    report = check_grad(grad_fn, loss_fn, params, x, y, **kwargs)
    if not report.ok:
        raise AssertionError(f"{report.message}\n{report.table()}")
    return report
