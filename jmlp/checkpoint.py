"""Sweep checkpoints: checksummed msgpack files, written atomically, read without running code.

A checkpoint is one file ``step-000000100.ckpt`` holding a header line
``JMLPCKPT 1 <sha256 of the payload> <payload bytes>`` and a payload that
``flax.serialization.msgpack_serialize`` wrote: the sweep's snapshot (every
run's parameters, optimizer state, step counters, loss history, epoch
permutations), the resolved config and its hash. Loading checks the length
and the checksum before it decodes anything, and msgpack decodes only plain
data and arrays (no pickle), so a truncated, corrupted or hostile file is
refused, never used.

Files are written to a temporary name, fsynced, renamed into place and the
folder fsynced, so a crash leaves either the old set or the new one; the last
``keep`` checkpoints are kept so a damaged newest one falls back to the one
before.
"""

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from flax import serialization

from .errors import BadValue

MAGIC = b"JMLPCKPT"
VERSION = 1
PATTERN = re.compile(r"step-(\d{9})\.ckpt")

# Keys that decide when the sweep saves or reports, not what it computes: a
# resume may change them.
FREE_KEYS = {("sweep", "chunk_steps"), ("sweep", "checkpoint_every")}


class CorruptCheckpoint(BadValue):
    """A checkpoint file that is truncated, altered or not a jmlp checkpoint."""


def config_hash(config: dict) -> str:
    """sha256 of the resolved config's canonical JSON, less the keys a resume may change.

    >>> config_hash({"sweep": {"chunk_steps": 5}}) == config_hash({"sweep": {"chunk_steps": 9}})
    True
    """
    if not isinstance(config, dict):
        raise BadValue(f"a checkpoint's config must be a dict (of sections), got {config!r:.80}")
    kept = {s: _kept(s, keys) for s, keys in config.items()}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def _kept(section, keys):
    return {k: v for k, v in keys.items() if (section, k) not in FREE_KEYS} if isinstance(keys, dict) else keys


def config_diff(old: dict, new: dict) -> list[str]:
    """``section.key`` for every key whose value differs (the free keys aside).

    >>> config_diff({"train": {"steps": 10, "tol": None}}, {"train": {"steps": 20, "tol": None}})
    ['train.steps']
    """
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        if not (isinstance(a, dict) and isinstance(b, dict)):
            out += [section] if a != b else []
            continue
        for key in sorted(set(a) | set(b)):
            if (section, key) not in FREE_KEYS and a.get(key, "<unset>") != b.get(key, "<unset>"):
                out.append(f"{section}.{key}")
    return out


def encode(snapshot: dict, config: dict) -> bytes:
    """The bytes of one checkpoint file."""
    payload = serialization.msgpack_serialize(
        {
            "format": "jmlp-sweep",
            "version": VERSION,
            "config": json.dumps(config),  # key order kept: results.json prints it
            "config_hash": config_hash(config),
            "done": int(snapshot["done"]),
            "state": {k: np.ascontiguousarray(v) for k, v in snapshot["state"].items()},
        }
    )
    header = b"%s %d %s %d\n" % (MAGIC, VERSION, hashlib.sha256(payload).hexdigest().encode(), len(payload))
    return header + payload


def decode(data: bytes, name: str = "checkpoint") -> dict:
    """``{"config", "config_hash", "done", "state"}`` from the bytes of a file, or
    ``CorruptCheckpoint`` naming what is wrong."""
    line, newline, payload = data.partition(b"\n")
    parts = line.split(b" ")
    if not newline or len(parts) != 4 or parts[0] != MAGIC:
        raise CorruptCheckpoint(f"{name} is not a jmlp checkpoint (no {MAGIC.decode()} header)")
    if parts[1] != b"%d" % VERSION:
        raise CorruptCheckpoint(f"{name} has format version {parts[1].decode(errors='replace')}, this jmlp reads {VERSION}")
    try:
        length = int(parts[3])
    except ValueError:
        raise CorruptCheckpoint(f"{name} has a damaged header") from None
    if len(payload) != length:
        raise CorruptCheckpoint(f"{name} is truncated or padded: {len(payload)} payload bytes, the header says {length}")
    if hashlib.sha256(payload).hexdigest().encode() != parts[2]:
        raise CorruptCheckpoint(f"{name} fails its sha256 checksum: the file was altered or damaged")
    try:
        content = serialization.msgpack_restore(payload)
        config = json.loads(content["config"])
        out = {"config": config, "config_hash": content["config_hash"], "done": int(content["done"])}
        out["state"] = {str(k): np.asarray(v) for k, v in content["state"].items()}
    except Exception as e:  # a payload with a valid checksum but the wrong shape: not ours
        raise CorruptCheckpoint(f"{name} has a valid checksum but unreadable content ({type(e).__name__})") from None
    if content.get("format") != "jmlp-sweep" or config_hash(config) != out["config_hash"]:
        raise CorruptCheckpoint(f"{name} is not a jmlp sweep checkpoint or its config does not match its hash")
    return out


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(folder, snapshot: dict, config: dict, keep: int = 2) -> Path:
    """Write ``snapshot`` as ``folder/step-<done>.ckpt`` atomically; keep the newest ``keep``.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = save(folder, {"done": 3, "state": {".i": np.arange(2)}}, {"train": {}})
    >>> path.name, load(path)["done"]
    ('step-000000003.ckpt', 3)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{int(snapshot['done']):09d}.ckpt"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(snapshot, config))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(folder) -> list[Path]:
    """The checkpoint files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.fullmatch(p.name))


def load(path) -> dict:
    """One checkpoint file, verified (see ``decode``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorruptCheckpoint(f"cannot read checkpoint {str(path)!r}: {e.strerror}") from None
    return decode(data, f"checkpoint {str(path)!r}")


def latest(folder, warn=print) -> dict:
    """The newest checkpoint in ``folder`` that verifies, with ``"path"`` added.

    A newer one that fails is reported through ``warn`` and skipped; when none
    verifies, ``CorruptCheckpoint`` lists why each was refused.
    """
    found = checkpoints(folder)
    if not found:
        raise BadValue(f"no checkpoint in {str(folder)!r}: nothing to resume")
    reasons = []
    for path in reversed(found):
        try:
            out = load(path)
        except CorruptCheckpoint as e:
            reasons.append(str(e))
            continue
        for reason in reasons:
            warn(f"jmlp: warning: {reason}; using {path.name} instead")
        out["path"] = path
        return out
    raise CorruptCheckpoint("no usable checkpoint: " + "; ".join(reasons))
