"""What a stage is, where its files live, and when it can be skipped.

A stage is a thin wrapper: it reads its inputs, calls a pure function from
`features/` or `models/`, and writes its outputs atomically. It is skipped
when a lock entry records the same key: a digest of its config sections, the
content of its input files and the code of the modules it runs (not their
comments or docstrings: module_digest), and its outputs are still the ones
that run wrote. Like DVC, modification times are only used to avoid rehashing
unchanged files.

Where the files live: pipeline/catalog.py (RunContext).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.io import UnreadableFile, file_digest, read_json, write_json
from pipeline.catalog import RunContext


log = logging.getLogger("smp")

PathsFn = Callable[[RunContext], list[Path]]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    run: reads `inputs(ctx)`, writes every path of `outputs(ctx)`.
    sections: config sections that change its result.
    modules: modules whose source is part of its cache key.
    per_run: the stage writes into the run folder, so each run name reruns it.
    fingerprint: a cheap signature of inputs that are not files of `inputs` (the image files), part of the key.
    shared: its outputs do not depend on the config (only on the data): they live in
    ctx.shared_dir and its lock entry in ctx.shared_lock_file.
    """
    name: str
    run: Callable[[RunContext], None]
    inputs: PathsFn
    outputs: PathsFn
    sections: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    enabled: Callable[[RunContext], bool] = lambda ctx: True
    per_run: bool = False
    description: str = ""
    fingerprint: Callable[[RunContext], str] | None = None
    shared: bool = False


# Stage modules in run order; each defines `STAGE`. A new stage is one module here.
STAGE_MODULES = [
    "pipeline.make_demo",
    "pipeline.read_data",
    "pipeline.make_folds",
    "pipeline.build_metadata",
    "pipeline.encode",
    "pipeline.embed_features",
    "pipeline.user_features",
    "pipeline.prototype",
    "pipeline.adversarial",
    "pipeline.tune",
    "pipeline.train_trees",
    "pipeline.train_linear",
    "pipeline.blend",
    "pipeline.submit",
    "pipeline.plots",
    "pipeline.report",
]


def load_stages() -> list[Stage]:
    return [importlib.import_module(name).STAGE for name in STAGE_MODULES]


# --- cache keys ------------------------------------------------------------------------
def module_digest(names: tuple[str, ...]) -> str:
    """A digest of what the modules do: their syntax trees without docstrings, so editing a
    comment, a docstring or the layout reruns nothing, while a changed line of code does."""
    sha = hashlib.sha256()
    for name in sorted(names):
        # the file is read afresh: linecache may hold an older edit of the same size and mtime
        sha.update(code_digest(Path(importlib.util.find_spec(name).origin).read_text()).encode())
    return sha.hexdigest()


@functools.lru_cache(maxsize=None)  # stages share modules; parsing is most of a run's keying time
def code_digest(source: str) -> str:
    """A digest of a module's syntax tree, docstrings removed (comments are not in it, nor line
    numbers)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def stage_key(stage: Stage, ctx: RunContext, cache: dict) -> str:
    parts = {
        "config": ctx.config.digest(*stage.sections) if stage.sections else "",
        "seed": ctx.config.seed,
        "inputs": {str(p): file_digest(p, cache) for p in stage.inputs(ctx)},
        "code": module_digest(stage.modules + (stage.run.__module__,)),
        "run": ctx.run_name if stage.per_run else "",
        "fingerprint": stage.fingerprint(ctx) if stage.fingerprint else "",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Lock:
    """The record of finished stages: key and output signatures per stage."""

    def __init__(self, path: Path):
        self.path = path
        self.data = self._read(path)
        self._seen = self._file_signature()

    def _file_signature(self) -> str:
        return _signature(self.path) if self.path.is_file() else ""

    def refresh(self) -> None:
        """Read the file again if another process wrote it since this one read or saved it."""
        if self._file_signature() != self._seen:
            self.data = self._read(self.path)
            self._seen = self._file_signature()

    @staticmethod
    def _read(path: Path) -> dict:
        """The lock's content; one that cannot be read (truncated, not JSON, another shape) is
        named in one warning and read as empty: nothing it described counts as up to date."""
        empty = {"stages": {}, "hashes": {}}
        if not path.is_file():
            return empty
        try:
            data = read_json(path)
            reason = _lock_shape_error(data)
        except UnreadableFile as err:
            reason = err.reason
        except OSError as err:
            reason = err.strerror or str(err)
        if reason:
            log.warning("cannot read %s (%s); treating every stage as out of date", path, reason)
            return empty
        return data

    @property
    def hashes(self) -> dict:
        return self.data.setdefault("hashes", {})

    def is_current(self, stage: Stage, ctx: RunContext, key: str) -> bool:
        entry = self.data["stages"].get(stage.name)
        if not entry or entry["key"] != key:
            return False
        for path in stage.outputs(ctx):
            if not path.exists() or entry["outputs"].get(str(path)) != _signature(path):
                return False
        return True

    def record(self, stage: Stage, ctx: RunContext, key: str, seconds: float) -> None:
        self.data["stages"][stage.name] = {
            "key": key,
            "outputs": {str(p): _signature(p) for p in stage.outputs(ctx)},
            "seconds": round(seconds, 2),
        }
        self.save()

    def forget(self, stage: Stage) -> None:
        self.data["stages"].pop(stage.name, None)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)
        self._seen = self._file_signature()


def _lock_shape_error(data) -> str:
    """Why `data` is not a lock's content ('' when it is one)."""
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        return "no 'stages' table"
    if not isinstance(data.get("hashes", {}), dict):
        return "'hashes' is not a table"
    for name, entry in data["stages"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                and isinstance(entry.get("outputs"), dict)):
            return f"stage {name!r} has no key and outputs"
    return ""


def _signature(path: Path) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"
