"""Stage `blend`: combine the members' predictions into the final one.

`best`: the member with the highest validation SRC. Other methods (weights fit
on out-of-fold predictions only) plug in through `models.ensemble` when present.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from models.metrics import score
from pipeline.io import read_json, read_parquet, write_json, write_parquet
from pipeline.stage import RunContext, Stage
from pipeline.train_gbdt import active_members

log = logging.getLogger(__name__)


def member_names(ctx: RunContext) -> list[str]:
    return list(active_members(ctx.config))


def blend_best(summaries: dict[str, dict]) -> dict[str, float]:
    """Weight 1 on the member with the best validation SRC (ties: the first listed)."""
    best = max(summaries, key=lambda m: summaries[m]["score"]["src"])
    return {m: float(m == best) for m in summaries}


def run(ctx: RunContext) -> None:
    members = member_names(ctx)
    preds = {m: read_parquet(ctx.member_preds(m)) for m in members}
    summaries = {m: read_json(ctx.member_preds(m).with_suffix(".json")) for m in members}
    method = ctx.config.ensemble.method
    if method != "best":
        raise ValueError(f"ensemble.method {method!r} is not available; use 'best'")
    weights = blend_best(summaries)
    first = preds[members[0]]
    pred = sum(w * preds[m]["pred"].to_numpy() for m, w in weights.items() if w)
    final = first[["Pid", "split", "fold"]].assign(pred=pred)
    train = final[(final["split"] == "train") & (final["fold"] >= 0)]
    labels = read_parquet(ctx.posts("train"), columns=["Pid", "label"]).set_index("Pid")["label"]
    blend_score = score(labels.loc[train["Pid"]].to_numpy(), train["pred"].to_numpy())
    log.info("blend (%s): validation SRC %.4f MAE %.4f; weights %s", method, blend_score["src"],
             blend_score["mae"], {m: round(w, 3) for m, w in weights.items()})
    write_parquet(ctx.final_preds, final)
    write_json(ctx.final_preds.with_suffix(".json"), {
        "method": method, "weights": weights, "score": blend_score,
        "members": {m: s["score"] for m, s in summaries.items()},
    })


def inputs(ctx: RunContext) -> list[Path]:
    paths = [ctx.posts("train")]
    for m in member_names(ctx):
        paths += [ctx.member_preds(m), ctx.member_preds(m).with_suffix(".json")]
    return paths


STAGE = Stage(
    name="blend",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.final_preds, ctx.final_preds.with_suffix(".json")],
    sections=("ensemble",),
    modules=("models.metrics",),
    description="blend member predictions (weights from out-of-fold predictions only)",
)
