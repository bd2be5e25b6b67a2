"""argparse value types shared by the CLI's commands: each turns bad text into a
one-line message naming it (the parser's ``error`` makes that exit status 2)."""

import argparse

from .errors import BadValue


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise BadValue(f"{message} (see '{self.prog} --help')")


def numbers(text: str) -> list[float]:
    """``"2,3"`` -> ``[2.0, 3.0]``."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def widths(text: str) -> tuple[int, ...]:
    """``"2,4,1"`` -> ``(2, 4, 1)``."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 2,4,1, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
