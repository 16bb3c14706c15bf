"""Stage `adversarial`: can a classifier tell train posts from test posts? (validation.adversarial)

A diagnostic (models/adversarial.py): the cross-fitted AUC of a LightGBM classifier on the
feature blocks `validation.adversarial_blocks`, the features that shift most, and each post's
test-likeness. Writes adversarial/summary.json (submit copies it into scores.json, the report
draws it) and adversarial/posts.parquet (Pid, split, test_likeness, weight); no member reads
them unless `validation.adversarial_weights` is on, so the submission does not change with it.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from common.io import read_parquet, write_json, write_parquet
from features.blocks import join_blocks
from models.adversarial import adversarial_validation, likeness_weights, univariate_auc
from pipeline.catalog import RunContext
from pipeline.config import Config
from pipeline.members import BLOCK_ENABLED
from pipeline.stage import Stage

log = logging.getLogger(__name__)

MOST_TEST_LIKE = 10  # train posts listed in the summary, the most test-like first


def used_blocks(cfg: Config) -> list[str]:
    """The blocks of validation.adversarial_blocks that this config builds."""
    return [b for b in cfg.validation.adversarial_blocks if BLOCK_ENABLED[b](cfg)]


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    blocks = used_blocks(cfg)
    left_out = {b: "its stage is off in this config" for b in cfg.validation.adversarial_blocks if b not in blocks}
    for block, why in left_out.items():
        log.info("adversarial: block %s left out: %s", block, why)
    posts = {s: read_parquet(ctx.posts(s), columns=["Pid", "Uid", "Postdate"]) for s in ("train", "test")}
    X = {s: join_blocks({b: read_parquet(ctx.feature_block(b, s)) for b in blocks}, posts[s]["Pid"].to_numpy())
         if blocks else pd.DataFrame(index=range(len(posts[s]))) for s in posts}
    result = adversarial_validation(X["train"], X["test"], seed=cfg.validation.seed,
                                    post_dates=(posts["train"]["Postdate"], posts["test"]["Postdate"]),
                                    users=(posts["train"]["Uid"], posts["test"]["Uid"]))
    weights = likeness_weights(result.train_likeness)
    if cfg.validation.adversarial_weights and result.auc is None:
        log.info("adversarial: validation.adversarial_weights is on but there is no classifier (%s): "
                 "every train post weighs 1", result.reason)

    train = posts["train"]
    order = np.argsort(-np.nan_to_num(result.train_likeness, nan=-1.0), kind="stable")[:MOST_TEST_LIKE]
    most_like = [] if result.auc is None else [
        {"Pid": str(train["Pid"].iloc[i]), "Uid": str(train["Uid"].iloc[i]),
         "Postdate": pd.Timestamp(float(train["Postdate"].iloc[i]), unit="s", tz="UTC").strftime("%Y-%m-%d"),
         "test_likeness": float(result.train_likeness[i]), "weight": float(weights[i])} for i in order]
    time_auc = univariate_auc(train["Postdate"], posts["test"]["Postdate"])
    summary = {
        "auc": result.auc, "fold_aucs": result.fold_aucs, "n_folds": result.n_folds, "reason": result.reason,
        "n_train": result.n_train, "n_test": result.n_test, "blocks": blocks, "blocks_left_out": left_out,
        "time_auc": None if not np.isfinite(time_auc) else time_auc, "excluded": result.excluded,
        # NaN (a categorical's date correlation) as null: the file stays strict JSON
        "features": result.features.astype(object).where(result.features.notna(), None).to_dict(orient="records"),
        "most_test_like": most_like,
        "weights": {"used": cfg.validation.adversarial_weights, "min": float(weights.min()),
                    "max": float(weights.max()),
                    # Kish's effective sample size: how many equally weighted posts the weights are worth
                    "effective_posts": float(weights.sum() ** 2 / (weights ** 2).sum())},
    }
    frame = pd.concat([
        pd.DataFrame({"Pid": train["Pid"].to_numpy(), "split": "train", "test_likeness": result.train_likeness,
                      "weight": weights}),
        pd.DataFrame({"Pid": posts["test"]["Pid"].to_numpy(), "split": "test", "test_likeness": result.test_likeness,
                      "weight": np.nan}),
    ], ignore_index=True)
    write_parquet(ctx.adversarial_posts, frame)
    write_json(ctx.adversarial_summary, summary)
    if result.auc is not None:
        log.info("adversarial: train vs test AUC %.4f (post date alone %.4f); weights %.2f..%.2f",
                 result.auc, time_auc, summary["weights"]["min"], summary["weights"]["max"])


STAGE = Stage(
    name="adversarial",
    run=run,
    inputs=lambda ctx: [ctx.posts("train"), ctx.posts("test")]
    + [ctx.feature_block(b, s) for b in used_blocks(ctx.config) for s in ("train", "test")],
    outputs=lambda ctx: [ctx.adversarial_summary, ctx.adversarial_posts],
    sections=("validation",),
    modules=("models.adversarial", "models.sizing", "features.blocks", "pipeline.members"),
    enabled=lambda ctx: ctx.config.validation.adversarial,
    description="adversarial validation: a train-vs-test classifier's AUC, shifted features, test-like train posts",
)
