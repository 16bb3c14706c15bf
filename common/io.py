"""All file reading and writing of derived data lives here.

Every write is atomic: the data goes to a temporary file in the same folder,
which is flushed and renamed over the target, so a crash never leaves a
half-written file that a later run could mistake for a finished one. The file
gets the permissions a plain `open(path, "w")` would give it (0666 less the
umask: group-readable under the usual 022), not mkstemp's private 0600, so a
team can share a work or run folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from common.locks import FileLock


class WriteError(OSError):
    """A write that failed (disk full, no permission, file too large), naming the file it was writing."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # read once: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` if the block succeeds.

    An OSError while writing (ENOSPC and the like, which libraries report without a file name)
    becomes a `WriteError` that names `path`; the temporary file is removed either way.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise WriteError(err.errno, f"cannot write {path}: {reason} ({err})") from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock tied to `path` (on the side file `.<name>.lock`) for a read-change-write.

    The side file, not `path` itself: an atomic write replaces `path` by another file, which a lock
    on the old one would not cover.
    """
    path = Path(path)
    with FileLock(path.parent / f".{path.name}.lock"):
        yield


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


class KeyTwice(dict):
    """A JSON object in which a key was given twice (plain json keeps the last value silently)."""
    key = ""


def json_object(pairs: list[tuple[str, Any]]) -> dict:
    """json's object_pairs_hook: a dict, or a KeyTwice naming the first repeated key."""
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    twice, seen = KeyTwice(record), set()
    twice.key = next(k for k, _ in pairs if k in seen or seen.add(k))
    return twice


def read_json(path: str | Path) -> Any:
    def strict(pairs):
        record = json_object(pairs)
        if isinstance(record, KeyTwice):
            raise ValueError(f"{path}: key {record.key!r} given twice in one object")
        return record
    return json.loads(Path(path).read_text(), object_pairs_hook=strict)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# key of a feature block's notes in its parquet metadata: part -> why it is empty and was skipped
SKIPPED_KEY = b"smp.skipped"


def write_parquet(path: str | Path, frame: pd.DataFrame, skipped: dict[str, str] | None = None) -> None:
    """skipped: parts of a feature block left out because the data hold nothing for them
    (e.g. {"image": "no train post has a usable image"}), kept in the file's metadata."""
    with atomic_path(path) as tmp:
        if not skipped:
            frame.to_parquet(tmp, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.Table.from_pandas(frame, preserve_index=False)
        metadata = {**(table.schema.metadata or {}), SKIPPED_KEY: json.dumps(skipped, sort_keys=True).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


def read_skipped(path: str | Path) -> dict[str, str]:
    """The parts a feature block skipped, with the reason (empty when nothing was skipped)."""
    import pyarrow.parquet as pq
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[SKIPPED_KEY]) if SKIPPED_KEY in metadata else {}


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first (pipeline/run_all.py)")
    return pd.read_parquet(path, columns=columns)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def read_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None)


def file_digest(path: Path, cache: dict) -> str:
    """sha256 of a file, reusing the cached value while size and mtime are unchanged."""
    stat = path.stat()
    signature = f"{stat.st_size}:{stat.st_mtime_ns}"
    hit = cache.get(str(path))
    if hit and hit[0] == signature:
        return hit[1]
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    cache[str(path)] = (signature, sha.hexdigest())
    return sha.hexdigest()
