"""Stage `build_metadata`: label-free metadata feature block `meta`."""
from __future__ import annotations

from common.io import read_parquet, write_parquet
from features.metadata import build_metadata
from pipeline.catalog import RunContext
from pipeline.stage import Stage


def run(ctx: RunContext) -> None:
    train, test = (read_parquet(ctx.posts(s)) for s in ("train", "test"))
    meta_train, meta_test = build_metadata(train, test)
    write_parquet(ctx.feature_block("meta", "train"), meta_train)
    write_parquet(ctx.feature_block("meta", "test"), meta_test)


STAGE = Stage(
    name="build_metadata",
    run=run,
    inputs=lambda ctx: [ctx.posts("train"), ctx.posts("test")],
    outputs=lambda ctx: [ctx.feature_block("meta", s) for s in ("train", "test")],
    sections=("metadata",),
    modules=("features.metadata",),
    description="user, time, geo, text, tag and category features",
)
