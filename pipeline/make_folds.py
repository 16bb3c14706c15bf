"""Stage `make_folds`: the fold assignment every model and target statistic shares.

Writes folds.parquet and folds.json: the scheme applied (a small data set gets k-fold
cross-fitting instead of a time holdout), and the share of validation posts by users
unseen in the fit part beside the test's share of posts by users unseen in train.
"""
from __future__ import annotations

import logging

from common.io import read_parquet, write_json, write_parquet
from features.smpd import check_train_size
from models.validation import (fold_plan, folds_digest, make_folds, report_rows, seen_in_fit, selection_rows,
                               test_unseen_share)
from pipeline.catalog import RunContext
from pipeline.stage import Stage

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> None:
    cfg = ctx.config.validation
    train = read_parquet(ctx.posts("train"), columns=["Pid", "Uid", "Postdate"])
    # read_data checks it too, but its result is shared by every config: this config's folds decide
    check_train_size(len(train), cfg.n_folds, ctx.posts("train"))
    test_uids = read_parquet(ctx.posts("test"), columns=["Uid"])["Uid"].to_numpy()
    mirrored = test_uids if cfg.mirror_unseen else None
    folds = make_folds(train, cfg.scheme, cfg.n_folds, cfg.seed, cfg.holdout_frac, cfg.min_holdout_posts, mirrored,
                       cfg.report_frac)
    share = test_unseen_share(train["Uid"].to_numpy(), test_uids)
    plan = fold_plan(len(train), cfg.scheme, cfg.n_folds, cfg.holdout_frac, cfg.min_holdout_posts,
                     share if cfg.mirror_unseen else None, cfg.report_frac)
    validated = folds["fold"].to_numpy() >= 0
    report = report_rows(folds)
    seen = seen_in_fit(train["Uid"].to_numpy(), folds["fold"].to_numpy())
    info = {**plan.to_dict(), "protocol": plan.protocol, "folds_digest": folds_digest(folds),
            "n_validated": int(selection_rows(folds).sum()), "n_report": int(report.sum()),
            "test_unseen_share": share, "validation_unseen_share": float(1.0 - seen[validated].mean())}
    if plan.reason:
        log.info("make_folds: %s", plan.reason)
    log.info("%s (%s): validation rows per fold %s, %d of them the report slice; posts by unseen users: "
             "validation %.1f%%, test %.1f%%", plan.scheme, plan.protocol,
             folds["fold"].value_counts().sort_index().to_dict(), info["n_report"],
             100 * info["validation_unseen_share"], 100 * share)
    write_parquet(ctx.folds, folds)
    write_json(ctx.folds_plan, info)


STAGE = Stage(
    name="make_folds",
    run=run,
    inputs=lambda ctx: [ctx.posts("train"), ctx.posts("test")],
    outputs=lambda ctx: [ctx.folds, ctx.folds_plan],
    sections=("validation",),
    modules=("models.validation", "features.smpd"),
    description="assign validation folds (scheme from config, adapted to the data's size and unseen users)",
)
