"""What a stage is, where its files live, and when it can be skipped.

A stage is a thin wrapper: it reads its inputs, calls a pure function from
`features/` or `models/`, and writes its outputs atomically. It is skipped
when a lock entry records the same key: a digest of its config sections, the
content of its input files and the source of the modules it runs, and its
outputs are still the ones that run wrote. Like DVC, modification times are
only used to avoid rehashing unchanged files.

Work folders: configs of one data set live side by side and share what does not
depend on the config.

    work/<data set>/              shared_dir: the demo data, posts tables, encoder cache
                                  (features/encoders/<encoder>-<settings>/), trained prototype
                                  networks (prototype/<run key>/), stages.lock.json of the
                                  shared stages (make_demo, read_data)
    work/<data set>/config-<d>/   work_dir: everything that depends on the config (folds,
                                  feature blocks, tuning, predictions) and its own
                                  stages.lock.json; <d> = Config.work_digest()

A RunContext made by hand (tests, tools) without shared_dir keeps both in one folder.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.io import read_json, write_json
from pipeline.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunContext:
    """Everything a stage needs to find its inputs and outputs."""
    config: Config
    data_dir: Path
    work_dir: Path
    run_name: str
    submissions_dir: Path = REPO_ROOT / "submissions"
    test_labels: Path | None = None
    is_demo: bool = False
    extra: dict = field(default_factory=dict)
    shared_dir: Path | None = None  # the data set's folder, shared by its configs (default: work_dir)
    # the data set's name in work/ and the leaderboard (run_all.py: the folder's name and a digest
    # of its files); default: the data folder's name
    dataset: str = ""

    def __post_init__(self):
        if self.shared_dir is None:
            self.shared_dir = self.work_dir
        if not self.dataset:
            self.dataset = Path(self.data_dir).name

    # --- the one place that names derived files -------------------------------------
    def posts(self, split: str) -> Path:
        return self.shared_dir / f"posts_{split}.parquet"

    @property
    def read_report(self) -> Path:
        return self.shared_dir / "read_report.json"

    @property
    def folds(self) -> Path:
        return self.work_dir / "folds.parquet"

    @property
    def folds_plan(self) -> Path:
        """What make_folds did: the scheme applied, and the shares of unseen users."""
        return self.work_dir / "folds.json"

    @property
    def features_dir(self) -> Path:
        return self.work_dir / "features"

    def feature_block(self, block: str, split: str) -> Path:
        """A feature block (`meta`, `emb`, `proto`, ...) for one split, keyed by Pid."""
        return self.features_dir / f"{block}_{split}.parquet"

    @property
    def preds_dir(self) -> Path:
        return self.work_dir / "preds"

    def member_preds(self, member: str) -> Path:
        return self.preds_dir / f"{member}.parquet"

    @property
    def final_preds(self) -> Path:
        return self.preds_dir / "final.parquet"

    @property
    def run_dir(self) -> Path:
        return self.submissions_dir / self.run_name

    @property
    def leaderboard(self) -> Path:
        return self.submissions_dir / "leaderboard.csv"

    @property
    def lock_file(self) -> Path:
        """The lock of this config's stages."""
        return self.work_dir / "stages.lock.json"

    @property
    def shared_lock_file(self) -> Path:
        """The lock of the stages every config of the data set shares (Stage.shared)."""
        return self.shared_dir / "stages.lock.json"

    def data_files(self, split: str) -> list[Path]:
        from features.smpd import split_files
        return list(split_files(self.data_dir, split).values())


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


# --- cache keys ------------------------------------------------------------------------
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


def module_digest(names: tuple[str, ...]) -> str:
    sha = hashlib.sha256()
    for name in sorted(names):
        sha.update(inspect.getsource(importlib.import_module(name)).encode())
    return sha.hexdigest()


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
        self.data = read_json(path) if path.is_file() else {"stages": {}, "hashes": {}}

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


def _signature(path: Path) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"
