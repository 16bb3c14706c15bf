"""Stage `make_folds`: the fold assignment every model and target statistic shares."""
from __future__ import annotations

import logging

from models.validation import make_folds
from pipeline.io import read_parquet, write_parquet
from pipeline.stage import RunContext, Stage

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> None:
    cfg = ctx.config.validation
    train = read_parquet(ctx.posts("train"), columns=["Pid", "Uid", "Postdate"])
    folds = make_folds(train, cfg.scheme, cfg.n_folds, cfg.seed, cfg.holdout_frac)
    log.info("%s: validation rows per fold %s", cfg.scheme, folds["fold"].value_counts().sort_index().to_dict())
    write_parquet(ctx.folds, folds)


STAGE = Stage(
    name="make_folds",
    run=run,
    inputs=lambda ctx: [ctx.posts("train")],
    outputs=lambda ctx: [ctx.folds],
    sections=("validation",),
    modules=("models.validation",),
    description="assign validation folds (scheme from config)",
)
