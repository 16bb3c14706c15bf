"""Stage `side_tables`: the side tables a team brings (`--side-table FILE`, config `side_tables`) -> block `side`.

On when the config lists side tables (pipeline/catalog.py resolves them to absolute paths). Each
table is read where it is, never written (features/side_tables.py: which column is the key, what
is an error, what is a gap); its content is part of this stage's key, so a changed table reruns
the block and the members that use it, an unchanged one nothing. What was filled, left out and
matched goes to the config folder's `side_report.json` and the log: the tables belong to the
config, while `read_report.json` is the data set's, shared by every config.
"""
from __future__ import annotations

import logging
from pathlib import Path

from common.io import read_parquet, write_json, write_parquet
from features.side_tables import build_side_block
from pipeline.catalog import RunContext
from pipeline.stage import Stage

log = logging.getLogger("smp")
SPLITS = ("train", "test")


def tables(ctx: RunContext) -> list[Path]:
    return [Path(p) for p in ctx.config.side_tables]


def run(ctx: RunContext) -> None:
    train, test = (read_parquet(ctx.posts(s)) for s in SPLITS)
    block_train, block_test, report = build_side_block(tables(ctx), train, test)
    for entry in report["tables"]:
        counts = {k: v for k, v in entry.items() if k not in ("file", "columns", "left out", "notes")}
        log.info("[side_tables] %s: %d feature(s); %s", entry["file"], len(entry["columns"]), counts)
        for column, why in entry["left out"].items():
            log.warning("[side_tables] %s: column %r left out: %s", entry["file"], column, why)
        for note in entry["notes"]:
            log.warning("[side_tables] %s", note)
    empty = None if block_train.shape[1] > 1 else {"side": "no side-table column has a value on a train post"}
    write_parquet(ctx.feature_block("side", "train"), block_train, skipped=empty)
    write_parquet(ctx.feature_block("side", "test"), block_test, skipped=empty)
    write_json(ctx.side_report, report)


STAGE = Stage(
    name="side_tables",
    run=run,
    inputs=lambda ctx: [ctx.posts(s) for s in SPLITS] + tables(ctx),
    outputs=lambda ctx: [ctx.feature_block("side", s) for s in SPLITS] + [ctx.side_report],
    sections=("side_tables",),
    modules=("features.side_tables", "features.smpd"),
    enabled=lambda ctx: bool(ctx.config.side_tables),
    description="the team's own per-user / per-post tables (--side-table) -> block `side`",
)
