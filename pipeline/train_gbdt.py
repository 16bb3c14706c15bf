"""Stage `train_gbdt`: one LightGBM member per feature set, out-of-fold and test predictions.

Each member writes work/preds/<member>.parquet (Pid, split, fold, pred) and a
summary (scores, rounds, gain importance) beside it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.blocks import join_blocks
from models.cv import TargetStatSpec, cross_fit
from models.gbdt import LightGBMRegressor
from pipeline.config import Config
from pipeline.io import read_json, read_parquet, write_json, write_parquet
from pipeline.stage import RunContext, Stage

log = logging.getLogger(__name__)

# which config switch produces each feature block
BLOCK_ENABLED = {
    "meta": lambda cfg: True,
    "emb": lambda cfg: cfg.encoders.enabled,
    "imgstats": lambda cfg: cfg.encoders.enabled,
    "proto": lambda cfg: cfg.prototype.enabled,
}


def active_members(cfg: Config) -> dict[str, list[str]]:
    """Feature sets whose blocks are all produced under this config."""
    members = {}
    for member, blocks in cfg.gbdt.feature_sets.items():
        unknown = [b for b in blocks if b not in BLOCK_ENABLED]
        if unknown:
            raise ValueError(f"gbdt.feature_sets.{member}: unknown block(s) {unknown}; known: {sorted(BLOCK_ENABLED)}")
        if all(BLOCK_ENABLED[b](cfg) for b in blocks):
            members[member] = blocks
    if not members:
        raise ValueError("no gbdt.feature_sets member can run under this config")
    return members


def load_member_data(ctx: RunContext, blocks: list[str]):
    """Features of both splits, labels, folds and target-statistic keys for one member."""
    key_cols = list(dict.fromkeys(ctx.config.metadata.target_stat_keys + ["Alltags"]))
    posts = {s: read_parquet(ctx.posts(s), columns=["Pid", *key_cols] + (["label"] if s == "train" else []))
             for s in ("train", "test")}
    X = {s: join_blocks({b: read_parquet(ctx.feature_block(b, s)) for b in blocks}, posts[s]["Pid"].to_numpy())
         for s in ("train", "test")}
    folds = read_parquet(ctx.folds)
    if not np.array_equal(folds["Pid"].to_numpy(), posts["train"]["Pid"].to_numpy()):
        raise ValueError(f"{ctx.folds} does not match the train posts: rerun make_folds")
    meta = ctx.config.metadata
    stats = TargetStatSpec(posts["train"][key_cols], posts["test"][key_cols], meta.target_stat_keys,
                           meta.target_stat_smoothing, meta.tag_target_stats, meta.tag_min_count)
    return X["train"], X["test"], posts["train"]["label"].to_numpy(), folds, stats, posts


def sample_selection_mask(ctx: RunContext, blocks: list[str], n: int) -> np.ndarray | None:
    """The paper's trick: fit only on the posts with the lowest pretext loss (prototype.sample_selection)."""
    keep = ctx.config.prototype.sample_selection
    if keep >= 1.0 or "proto" not in blocks:
        return None
    loss = read_parquet(ctx.feature_block("proto", "train"), columns=["_pretext_loss"])["_pretext_loss"].to_numpy()
    if len(loss) != n:
        raise ValueError("proto block and train posts differ in length")
    return loss <= np.nanquantile(loss, keep)


def gbdt_factory(cfg: Config, params: dict | None = None):
    g = cfg.gbdt

    def make(seed: int, rounds: int | None) -> LightGBMRegressor:
        return LightGBMRegressor(params or g.params, rounds or g.num_boost_round, g.early_stopping_rounds,
                                 g.num_threads, seed, adapt_to_size=g.adapt_to_size)
    return make


def tuned_params(ctx: RunContext) -> dict | None:
    """Parameters found by the tuning stage, when it ran."""
    path = ctx.work_dir / "tuning" / "best_params.json"
    if ctx.config.tuning.enabled and path.is_file():
        return {**ctx.config.gbdt.params, **read_json(path)["params"]}
    return None


def member_frame(posts: dict[str, pd.DataFrame], folds: pd.DataFrame, oof: np.ndarray, test: np.ndarray) -> pd.DataFrame:
    return pd.concat([
        pd.DataFrame({"Pid": posts["train"]["Pid"].to_numpy(), "split": "train", "fold": folds["fold"].to_numpy(), "pred": oof}),
        pd.DataFrame({"Pid": posts["test"]["Pid"].to_numpy(), "split": "test", "fold": -1, "pred": test}),
    ], ignore_index=True)


def run(ctx: RunContext) -> None:
    params = tuned_params(ctx)
    for member, blocks in active_members(ctx.config).items():
        X, X_test, y, folds, stats, posts = load_member_data(ctx, blocks)
        fit_mask = sample_selection_mask(ctx, blocks, len(y))
        result = cross_fit(gbdt_factory(ctx.config, params), X, y, folds, X_test, seeds=ctx.config.gbdt.seeds,
                           target_stats=stats, fit_mask=fit_mask, name=member,
                           scale_refit_rounds=ctx.config.gbdt.adapt_to_size, refit_kfold=ctx.config.gbdt.refit_kfold)
        write_parquet(ctx.member_preds(member), member_frame(posts, folds, result.oof, result.test))
        write_json(ctx.member_preds(member).with_suffix(".json"), {
            "member": member, "model": "lightgbm", "blocks": blocks, "tuned": params is not None,
            "score": result.score, "fold_scores": result.fold_scores, "best_iterations": result.best_iterations,
            "n_features": X.shape[1], "feature_importance_gain": result.feature_importance.head(50).to_dict(),
        })


def outputs(ctx: RunContext) -> list[Path]:
    paths = []
    for member in active_members(ctx.config):
        paths += [ctx.member_preds(member), ctx.member_preds(member).with_suffix(".json")]
    return paths


def inputs(ctx: RunContext) -> list[Path]:
    blocks = sorted({b for bs in active_members(ctx.config).values() for b in bs})
    paths = [ctx.posts("train"), ctx.posts("test"), ctx.folds]
    paths += [ctx.feature_block(b, s) for b in blocks for s in ("train", "test")]
    if ctx.config.tuning.enabled and (ctx.work_dir / "tuning" / "best_params.json").is_file():
        paths.append(ctx.work_dir / "tuning" / "best_params.json")
    return paths


STAGE = Stage(
    name="train_gbdt",
    run=run,
    inputs=inputs,
    outputs=outputs,
    sections=("gbdt", "metadata", "tuning", "prototype"),
    modules=("models.cv", "models.gbdt", "models.sizing", "features.target_stats", "features.blocks"),
    description="LightGBM per feature set: out-of-fold and test predictions",
)
