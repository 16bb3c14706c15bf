"""Stage `read_data`: official SMPD files -> one typed parquet table per split."""
from __future__ import annotations

import logging

from common.io import write_json, write_parquet
from features.smpd import read_smpd
from pipeline.catalog import RunContext
from pipeline.stage import Stage

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> None:
    train, test, report = read_smpd(ctx.data_dir, ctx.config.validation.n_folds)
    for split in ("train", "test"):
        gaps = {k: v for k, v in report[split].items() if k not in ("rows", "notes")}
        log.info("%s: %d posts; filled gaps: %s", split, report[split]["rows"], gaps or "none")
        for note in report[split]["notes"]:
            log.warning("%s: %s", split, note)
    log.info("test posts by users unseen in train: %d", report["test users unseen in train"])
    write_parquet(ctx.posts("train"), train)
    write_parquet(ctx.posts("test"), test)
    write_json(ctx.read_report, report)


STAGE = Stage(
    name="read_data",
    run=run,
    inputs=lambda ctx: ctx.data_files("train") + ctx.data_files("test"),
    outputs=lambda ctx: [ctx.posts("train"), ctx.posts("test"), ctx.read_report],
    modules=("features.smpd",),
    shared=True,
    description="read and check the official SMPD files into one table per split",
)
