"""What a file held when it was written: its size and a CRC32 of its bytes, recorded beside it
(in a manifest), so that a cache is checked before it is trusted.

CRC32 (zlib) reads at several GB/s: cheap next to what a cache saves, and it catches the
damage a cache meets (a truncated copy, bytes overwritten) though not a forgery.
"""
from __future__ import annotations

import zlib
from pathlib import Path

_BLOCK = 64 << 20


def written_record(path: str | Path) -> dict:
    """{"bytes": size, "crc32": checksum of the whole file} of a file just written."""
    crc, size = 0, 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"bytes": size, "crc32": crc}


def written_problem(path: str | Path, record: dict | None) -> str:
    """What is wrong with `path` against its record ("" when it holds what was written)."""
    path = Path(path)
    if not isinstance(record, dict) or "bytes" not in record or "crc32" not in record:
        return "no checksum recorded for it"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size != record["bytes"]:
        return f"{'truncated' if size < record['bytes'] else 'too long'}: {size} of {record['bytes']} bytes"
    try:
        now = written_record(path)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if now["crc32"] != record["crc32"]:
        return "its bytes do not match the checksum written with it (damaged)"
    return ""
