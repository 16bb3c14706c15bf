"""Stage `blend`: combine the members' predictions into the final one.

Members are the LightGBM feature sets (train_trees) and the ridge members
(train_linear). Weights (ensemble.method: `best` or `nnls`) are fit on the
out-of-fold rows only and applied to the test rows. They sum to one, so the
blend keeps the members' level. The train rows of final.parquet hold the
cross-fitted blend (each chunk of out-of-fold rows blended with weights fit on
the other chunks: folds, or time-ordered chunks of a holdout), and the blend's
validation score is measured on them, so choosing the weights does not flatter
it (final.json also gives the in-sample score). With a time-ordered holdout,
final.json reports what a level shift (median holdout residual) does to MAE;
ensemble.recalibrate_level applies it to the test prediction.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import read_json, read_parquet, write_json, write_parquet
from features.blocks import check_post_order
from models.ensemble import cross_fitted_blend, fit_blend, level_recalibration, time_chunks
from models.metrics import score
from models.validation import validation_folds
from pipeline.catalog import RunContext
from pipeline.members import members_of
from pipeline.stage import Stage

log = logging.getLogger(__name__)


def load_members(ctx: RunContext, members: list[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict]:
    """Row keys (Pid, split, fold) shared by all members, each member's prediction, and summaries."""
    keys = None
    preds, summaries = {}, {}
    for m in members:
        frame = read_parquet(ctx.member_preds(m))
        if keys is None:
            keys = frame[["Pid", "split", "fold"]]
        elif not frame[["Pid", "split", "fold"]].equals(keys):
            raise ValueError(f"{ctx.member_preds(m)} does not list the posts of {ctx.member_preds(members[0])} "
                             "in the same order with the same folds: rerun the member stages")
        preds[m] = frame["pred"].to_numpy(dtype=np.float64)
        summaries[m] = read_json(ctx.member_summary(m))
    return keys, preds, summaries


def blend_frame(keys: pd.DataFrame, preds: dict[str, np.ndarray], y_train: np.ndarray, time_train: np.ndarray,
                method: str, n_chunks: int, recalibrate: bool) -> tuple[pd.DataFrame, dict]:
    """The blended predictions of every row, from weights fit on the out-of-fold rows, and a summary."""
    train = (keys["split"] == "train").to_numpy()
    test = (keys["split"] == "test").to_numpy()
    fold = keys["fold"].to_numpy()
    validated = train & (fold >= 0)
    val_train = validated[train]  # validated rows among the train rows (train rows are in posts order)
    y, t = y_train[val_train], time_train[val_train]
    oof = {m: p[validated] for m, p in preds.items()}

    blend = fit_blend(method, oof, y)  # out-of-fold rows only: test rows never reach the weights
    folds_seen = validation_folds(keys[validated])
    chunk = fold[validated] if len(folds_seen) > 1 else time_chunks(t, n_chunks)
    oof_blend = cross_fitted_blend(method, oof, y, chunk)

    pred = np.full(len(keys), np.nan)
    pred[validated] = oof_blend
    pred[test] = blend.predict({m: p[test] for m, p in preds.items()})
    info = {"method": method, "weights": blend.weights,
            "score": score(y, oof_blend),
            "score_in_sample": score(y, blend.predict(oof)),  # weights fit on these very rows: optimistic
            "chunks": int(len(np.unique(chunk)))}
    if len(folds_seen) == 1:  # a time-ordered holdout: the drift of the label level is measurable
        recal = level_recalibration(y, oof_blend, t)
        recal["applied"] = bool(recalibrate)
        if recalibrate:
            pred[test] += recal["shift"]
        info["recalibration"] = recal
    elif recalibrate:
        raise ValueError("ensemble.recalibrate_level needs a time-ordered holdout (validation.scheme: time_holdout)")
    return keys.assign(pred=pred), info


def run(ctx: RunContext) -> None:
    members = list(members_of(ctx.config))
    keys, preds, summaries = load_members(ctx, members)
    posts = read_parquet(ctx.posts("train"), columns=["Pid", "label", "Postdate"])
    train_keys = keys[keys["split"] == "train"]
    check_post_order(train_keys["Pid"], posts["Pid"], "the member predictions", "rerun the member stages")
    e = ctx.config.ensemble
    recalibrate = e.recalibrate_level
    plan = read_json(ctx.folds_plan)
    if recalibrate and plan["configured"] == "time_holdout" and plan["scheme"] != "time_holdout":
        # a small data set got k-fold instead of the holdout (make_folds): the drift cannot be measured
        log.warning("ensemble.recalibrate_level not applied: %s", plan["reason"])
        recalibrate = False
    final, info = blend_frame(keys, preds, posts["label"].to_numpy(dtype=np.float64),
                              posts["Postdate"].to_numpy(dtype=np.float64), e.method, e.score_chunks,
                              recalibrate)
    info["members"] = {m: s["score"] for m, s in summaries.items()}
    info["member_models"] = {m: s.get("model", "lightgbm") for m, s in summaries.items()}
    log.info("blend (%s): validation SRC %.4f MAE %.4f (cross-fitted; in-sample SRC %.4f); weights %s", e.method,
             info["score"]["src"], info["score"]["mae"], info["score_in_sample"]["src"],
             {m: round(w, 3) for m, w in info["weights"].items()})
    if "recalibration" in info:
        r = info["recalibration"]
        log.info("level shift %+.3f: later-half holdout MAE %.4f -> %.4f%s", r["shift"], r["mae_later_half_before"],
                 r["mae_later_half_after"], " (applied to test)" if r["applied"] else " (not applied)")
    write_parquet(ctx.final_preds, final)
    write_json(ctx.final_summary, info)


def inputs(ctx: RunContext) -> list[Path]:
    paths = [ctx.posts("train"), ctx.folds_plan]
    for m in list(members_of(ctx.config)):
        paths += [ctx.member_preds(m), ctx.member_summary(m)]
    return paths


STAGE = Stage(
    name="blend",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.final_preds, ctx.final_summary],
    sections=("ensemble",),
    modules=("models.metrics", "models.ensemble"),
    description="blend member predictions (weights from out-of-fold predictions only)",
)
