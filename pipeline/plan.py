"""A run's cost before it runs: each stage's seconds, estimated from the data set's size and the
seconds per post the stage took in earlier runs.

Every stage lock (stages.lock.json) records the seconds a stage took (pipeline/stage.py Lock.record);
over the posts of the data set folder it ran in, that is a cost per post. The estimate of a stage is
that cost times the posts of this run's data set, from the closest earlier run: this config folder's
own lock first, then the data set's other config folders, then the other data sets beside it in the
same work folder (the most recent lock first in each). A stage never timed there has no estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.io import read_json
from pipeline.catalog import RunContext
from pipeline.stage import Stage


@dataclass(frozen=True)
class Estimate:
    seconds: float
    seconds_per_post: float
    timed_in: str  # `here` (this config folder), or the folder of the earlier run


def table_rows(path: Path) -> int:
    import pyarrow.parquet as pq
    return pq.read_metadata(path).num_rows


def folder_posts(shared_dir: Path) -> int | None:
    """The posts (train and test) of a data set folder whose posts tables exist (read_data has run)."""
    tables = [shared_dir / f"posts_{split}.parquet" for split in ("train", "test")]
    if not all(t.is_file() for t in tables):
        return None
    return sum(table_rows(t) for t in tables)


def data_set_posts(ctx: RunContext) -> int | None:
    """The posts of the run's data set: its posts tables, else the demo's configured size, else the
    lines of the official image lists (one per post); None when none of them is there."""
    posts = folder_posts(ctx.shared_dir)
    if posts is not None:
        return posts
    if ctx.is_demo:
        return ctx.config.demo.n_train + ctx.config.demo.n_test
    from features.smpd import SMPDFormatError, split_files
    try:
        lists = [split_files(ctx.data_dir, split)["img_filepath"] for split in ("train", "test")]
    except SMPDFormatError:
        return None
    return sum(sum(1 for line in open(path, encoding="utf-8", errors="replace") if line.strip()) for path in lists)


class Estimator:
    """Stage estimates for one run (ctx), from the locks under the work folder that holds its data set."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.posts = data_set_posts(ctx)
        # (lock file, posts of its data set), closest first: this data set's, then the others'
        own = [ctx.lock_file, ctx.shared_lock_file]
        others = [p for p in ctx.shared_dir.glob("config-*/stages.lock.json") if p not in own]
        here = [(p, self.posts) for p in dict.fromkeys(own + by_recency(others))]
        beside = []
        for folder in sorted(ctx.shared_dir.parent.iterdir()) if ctx.shared_dir.parent.is_dir() else []:
            try:
                posts = folder_posts(folder) if folder.is_dir() and folder != ctx.shared_dir else None
                if posts:
                    beside += [(p, posts, p.stat().st_mtime) for p in
                               [folder / "stages.lock.json", *folder.glob("config-*/stages.lock.json")] if p.is_file()]
            except (OSError, ValueError):  # a folder beside it that is not a data set's (unreadable, another user's)
                continue
        self.locks = here + [(p, posts) for p, posts, _ in sorted(beside, key=lambda lpm: -lpm[2])]

    def stage(self, stage: Stage) -> Estimate | None:
        for lock, posts in self.locks:
            seconds = recorded_seconds(lock, stage.name)
            if seconds is None or not posts or not self.posts:
                continue
            per_post = seconds / posts
            where = "here" if lock in (self.ctx.lock_file, self.ctx.shared_lock_file) else \
                lock.parent.relative_to(self.ctx.shared_dir.parent).as_posix()
            return Estimate(per_post * self.posts, per_post, where)
        return None


def by_recency(locks: list[Path]) -> list[Path]:
    existing = [p for p in locks if p.is_file()]
    return sorted(existing, key=lambda p: p.stat().st_mtime, reverse=True)


def recorded_seconds(lock: Path, stage: str) -> float | None:
    if not lock.is_file():
        return None
    try:
        entry = read_json(lock).get("stages", {}).get(stage)
    except (OSError, ValueError):
        return None
    return float(entry["seconds"]) if entry and "seconds" in entry else None
