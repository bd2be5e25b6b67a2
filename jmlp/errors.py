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


def typo_distance(a: str, b: str) -> int:
    """Edit distance counting a swap of neighbours as one edit (optimal string alignment).

    >>> typo_distance("adma", "adam"), typo_distance("adma", "adamax")
    (1, 2)
    """
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def closest(name: str, choices) -> str | None:
    """The choice a typo most likely meant, or None when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=len(choices), cutoff=0.5)
    return min(close, key=lambda c: (typo_distance(name, c), close.index(c)), default=None)


def unknown_name(kind: str, name: object, choices) -> BadValue:
    """Build the error for an unknown registry name, suggesting the closest one.

    >>> str(unknown_name("activation", "rleu", ["relu", "tanh"]))
    "unknown activation 'rleu'; did you mean 'relu'? (choices: relu, tanh)"
    """
    choices = sorted(choices)
    close = closest(str(name), choices)
    hint = f"; did you mean {close!r}?" if close else ""
    return BadValue(f"unknown {kind} {name!r}{hint} (choices: {', '.join(choices)})")
