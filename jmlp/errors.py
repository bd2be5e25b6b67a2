"""The one error type for user mistakes, and a helper that suggests the closest name.

The CLI turns a ``JmlpError`` into one line on stderr and exit status 2; library
callers see an ordinary ``ValueError`` or ``TypeError``.
"""

import difflib


class JmlpError(Exception):
    """A mistake in what the user passed (a value, a name, a file)."""


class BadValue(JmlpError, ValueError):
    """A value that is out of range, malformed or inconsistent."""


class BadType(JmlpError, TypeError):
    """A value of the wrong type."""


def unknown_name(kind: str, name: object, choices) -> BadValue:
    """Build the error for an unknown registry name, suggesting the closest one.

    >>> str(unknown_name("activation", "rleu", ["relu", "tanh"]))
    "unknown activation 'rleu'; did you mean 'relu'? (choices: relu, tanh)"
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return BadValue(f"unknown {kind} {name!r}{hint} (choices: {', '.join(choices)})")
