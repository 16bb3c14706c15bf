"""Stage `blend`: combine the members' predictions into the final one.

Members are the LightGBM feature sets (train_trees) and the ridge members
(train_linear). Weights (ensemble.method: `best` or `nnls`) are fit on the
selection rows only (out-of-fold rows outside the report slice of
models/validation.py) and applied to the report slice and the test rows. They
sum to one, so the blend keeps the members' level. The blend's validation score
is the report slice's, which no weight saw; final.json also gives the selection
rows' cross-fitted score (each chunk blended with weights fit on the other
chunks: folds, or time-ordered chunks of a holdout) and the in-sample one.
With a time-ordered holdout, final.json reports what a level shift (median
holdout residual, from the selection rows) does to the report slice's MAE;
ensemble.recalibrate_level (off: models/ensemble.py says why) applies it to test.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import read_json, read_parquet, write_json, write_parquet
from features.blocks import check_post_order
from models.ensemble import blend_frame
from models.validation import report_rows
from pipeline.catalog import RunContext
from pipeline.members import members_of
from pipeline.stage import Stage

log = logging.getLogger(__name__)


def load_members(ctx: RunContext, members: list[str]):
    """Row keys (Pid, split, fold) shared by all members, each member's prediction, summaries, and the
    refit-check predictions of the members that have them (validation.refit_check)."""
    keys = None
    preds, summaries, checks = {}, {}, {}
    for m in members:
        frame = read_parquet(ctx.member_preds(m))
        if keys is None:
            keys = frame[["Pid", "split", "fold"]]
        elif not frame[["Pid", "split", "fold"]].equals(keys):
            raise ValueError(f"{ctx.member_preds(m)} does not list the posts of {ctx.member_preds(members[0])} "
                             "in the same order with the same folds: rerun the member stages")
        preds[m] = frame["pred"].to_numpy(dtype=np.float64)
        if "refit_check" in frame.columns:  # validation.refit_check (models/cv.py)
            checks[m] = frame["refit_check"].to_numpy(dtype=np.float64)
        summaries[m] = read_json(ctx.member_summary(m))
    return keys, preds, summaries, checks


def run(ctx: RunContext) -> None:
    members = list(members_of(ctx.config))
    keys, preds, summaries, checks = load_members(ctx, members)
    posts = read_parquet(ctx.posts("train"), columns=["Pid", "label", "Postdate"])
    train_keys = keys[keys["split"] == "train"]
    check_post_order(train_keys["Pid"], posts["Pid"], "the member predictions", "rerun the member stages")
    folds = read_parquet(ctx.folds)
    check_post_order(folds["Pid"], posts["Pid"], str(ctx.folds), "rerun make_folds")
    e = ctx.config.ensemble
    recalibrate = e.recalibrate_level
    plan = read_json(ctx.folds_plan)
    if recalibrate and plan["configured"] == "time_holdout" and plan["scheme"] != "time_holdout":
        # a small data set got k-fold instead of the holdout (make_folds): the drift cannot be measured
        log.warning("ensemble.recalibrate_level not applied: %s", plan["reason"])
        recalibrate = False
    final, info = blend_frame(keys, preds, posts["label"].to_numpy(dtype=np.float64),
                              posts["Postdate"].to_numpy(dtype=np.float64), e.method, e.score_chunks,
                              recalibrate, report_rows(folds), refit_checks=checks)
    info["members"] = {m: s["score"] for m, s in summaries.items()}
    info["member_models"] = {m: s.get("model", "lightgbm") for m, s in summaries.items()}
    log.info("blend (%s): validation SRC %.4f MAE %.4f on the %s (%d posts); selection posts SRC %.4f "
             "(cross-fitted), in-sample %.4f; weights %s", e.method, info["score"]["src"], info["score"]["mae"],
             info["scored_on"], info["n_scored"], info["score_selection"]["src"], info["score_in_sample"]["src"],
             {m: round(w, 3) for m, w in info["weights"].items()})
    if "recalibration" in info:
        r = info["recalibration"]
        log.info("level shift %+.3f: later holdout posts' MAE %.4f -> %.4f%s", r["shift"], r["mae_later_half_before"],
                 r["mae_later_half_after"], " (applied to test)" if r["applied"] else " (not applied)")
    write_parquet(ctx.final_preds, final)
    write_json(ctx.final_summary, info)


def inputs(ctx: RunContext) -> list[Path]:
    paths = [ctx.posts("train"), ctx.folds, ctx.folds_plan]
    for m in list(members_of(ctx.config)):
        paths += [ctx.member_preds(m), ctx.member_summary(m)]
    return paths


STAGE = Stage(
    name="blend",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.final_preds, ctx.final_summary],
    sections=("ensemble",),
    modules=("models.metrics", "models.ensemble", "models.validation", "features.blocks", "pipeline.members"),
    description="blend member predictions (weights from out-of-fold predictions only)",
)
