"""Data sources: the seed sample, a synthetic regression, scikit-learn's bundled
diabetes and digits sets, and CSV files; plus the train/validation split.

Everything here is NumPy and happens once, before any compiled program runs.
"""

import csv
import dataclasses
from pathlib import Path

import numpy as np

from .errors import BadValue, unknown_name

SOURCES = ("seed", "synthetic", "diabetes", "digits", "csv")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and validation arrays. ``y`` is ``(n, 1)`` floats for regression,
    ``(n,)`` integer labels for classification."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    classes: int | None  # number of classes, None for regression

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def seed_sample():
    """The walkthrough's one house: x = [2, 3], y = 10."""
    return np.array([[2.0, 3.0]]), np.array([[10.0]])


def synthetic(n_samples=442, noise=0.1, seed=0):
    """Friedman #1 regression (10 features, 5 informative) from scikit-learn."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n_samples, n_features=10, noise=noise, random_state=seed)
    return x, y[:, None]


def diabetes():
    """scikit-learn's bundled diabetes regression set (442 x 10); no network."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return x, y[:, None]


def digits():
    """scikit-learn's bundled 8x8 digits (1797 x 64, 10 classes); no network."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x, y.astype(np.int32)


def read_csv(path, target: str):
    """A numeric CSV with a header row; ``target`` names the column to predict."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise BadValue(f"cannot read csv file {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BadValue(f"csv file {str(path)!r} is not text") from None
    if len(rows) < 2:
        raise BadValue(f"csv file {str(path)!r} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise unknown_name(f"target column in {path.name}", target, header)
    values = np.empty((len(rows) - 1, len(header)))
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise BadValue(f"{path.name} line {r} has {len(row)} fields, the header has {len(header)}")
        for c, cell in enumerate(row):
            try:
                values[r - 2, c] = float(cell)
            except ValueError:
                raise BadValue(f"{path.name} line {r}, column {header[c]!r}: {cell!r} is not a number") from None
    t = header.index(target)
    return np.delete(values, t, axis=1), values[:, t : t + 1]


def load(source: str, *, val_fraction=0.0, standardize=False, standardize_target=False, split_seed=0, **options) -> Dataset:
    """Load a source and split it; statistics for standardizing come from the train rows only.

    >>> data = load("digits", val_fraction=0.2)
    >>> data.x_train.shape, data.x_val.shape, data.classes
    ((1438, 64), (359, 64), 10)
    """
    if source == "seed":
        x, y = seed_sample()
    elif source == "synthetic":
        x, y = synthetic(**options)
    elif source == "diabetes":
        x, y = diabetes()
    elif source == "digits":
        x, y = digits()
    elif source == "csv":
        x, y = read_csv(options["path"], options["target"])
    else:
        raise unknown_name("data source", source, SOURCES)
    classes = int(y.max()) + 1 if source == "digits" else None
    for name, a in (("x", x), ("y", y)):
        if not np.isfinite(a).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise BadValue(f"{source} data: {name} holds a non-finite value {a[bad]} at row {bad[0]}")
    if not 0 <= val_fraction < 1:
        raise BadValue(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = x.shape[0]
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and not 1 <= n_val < n:
        raise BadValue(f"val_fraction {val_fraction} leaves no validation or no training rows out of {n}")
    order = np.random.default_rng(split_seed).permutation(n) if n_val else np.arange(n)
    train, val = order[n_val:], order[:n_val]
    x_train, y_train = x[train], y[train]
    x_val, y_val = (x[val], y[val]) if n_val else (None, None)
    if standardize:
        x_train, x_val = _standardize(x_train, x_val)
    if standardize_target and classes is None:
        y_train, y_val = _standardize(y_train, y_val)
    return Dataset(x_train, y_train, x_val, y_val, classes)


def _standardize(train, val):
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant columns (digits' blank pixels) stay at 0
    return (train - mean) / std, None if val is None else (val - mean) / std
