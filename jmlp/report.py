"""Plain-text tables and atomic file writes: the only place that formats output."""

import csv
import io
import json
import os
import tempfile
from pathlib import Path


def fmt(v) -> str:
    """A number as a short string (6 significant digits); lists element-wise."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(e) for e in v) + "]"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def table(rows: list[list], header: list[str]) -> str:
    """Left-aligned columns separated by two spaces.

    >>> print(table([["a", 1]], ["name", "n"]))
    name  n
    ----  -
    a     1
    """
    cells = [header] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename:
    a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def csv_text(rows: list[dict]) -> str:
    """Records as CSV text, columns in the first record's order; None as empty."""
    f = io.StringIO()
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    return f.getvalue()


def toml_text(config: dict) -> str:
    """A resolved config as TOML (unset keys, which TOML cannot hold as null, left out)."""
    import tomli_w

    def drop_none(v):
        if isinstance(v, dict):
            return {k: drop_none(e) for k, e in v.items() if e is not None}
        if isinstance(v, list):
            return [drop_none(e) for e in v]
        return v

    return tomli_w.dumps(drop_none(config))
