"""Stage `train_gbdt`: one LightGBM member per feature set, out-of-fold and test predictions.

Each member writes work/preds/<member>.parquet (Pid, split, fold, pred) and a
summary (scores, rounds, gain importance) beside it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from functools import partial

from features.blocks import join_blocks
from features.user_features import CLUSTER, similar_user_statistics, user_trend_statistics
from models.catboost_member import CatBoostMember
from models.cv import TargetStatSpec, cross_fit
from models.gbdt import LightGBMRegressor
from pipeline.config import Config
from pipeline.io import read_json, read_parquet, read_skipped, write_json, write_parquet
from pipeline.stage import RunContext, Stage

log = logging.getLogger(__name__)

# which config switch produces each feature block
BLOCK_ENABLED = {
    "meta": lambda cfg: True,
    "emb": lambda cfg: cfg.encoders.enabled,
    "imgstats": lambda cfg: cfg.encoders.enabled,
    "proto": lambda cfg: cfg.prototype.enabled,
    "user": lambda cfg: cfg.users.block_on(cfg.encoders.enabled),
}


def with_user_block(cfg: Config, blocks: list[str]) -> list[str]:
    """A member's blocks plus the user block when it is built (users.*: it joins every member)."""
    return blocks + ["user"] if cfg.users.block_on(cfg.encoders.enabled) and "user" not in blocks else list(blocks)


def active_members(cfg: Config) -> dict[str, list[str]]:
    """Feature sets whose blocks are all produced under this config."""
    members = {}
    for member, blocks in cfg.gbdt.feature_sets.items():
        unknown = [b for b in blocks if b not in BLOCK_ENABLED]
        if unknown:
            raise ValueError(f"gbdt.feature_sets.{member}: unknown block(s) {unknown}; known: {sorted(BLOCK_ENABLED)}")
        if all(BLOCK_ENABLED[b](cfg) for b in blocks):
            members[member] = with_user_block(cfg, blocks)
    if not members:
        raise ValueError("no gbdt.feature_sets member can run under this config")
    return members


def stat_key_columns(cfg: Config) -> list[str]:
    """Posts-table columns the target statistics read (the user statistics: Uid and Postdate)."""
    return list(dict.fromkeys(cfg.metadata.target_stat_keys + ["Alltags", "Uid", "Postdate"]))


def load_member_data(ctx: RunContext, blocks: list[str]):
    """Features of both splits, labels, folds and target-statistic keys for one member."""
    key_cols = stat_key_columns(ctx.config)
    posts = {s: read_parquet(ctx.posts(s), columns=["Pid", *key_cols] + (["label"] if s == "train" else []))
             for s in ("train", "test")}
    X = {s: join_blocks({b: read_parquet(ctx.feature_block(b, s)) for b in blocks}, posts[s]["Pid"].to_numpy())
         for s in ("train", "test")}
    folds = read_parquet(ctx.folds)
    if not np.array_equal(folds["Pid"].to_numpy(), posts["train"]["Pid"].to_numpy()):
        raise ValueError(f"{ctx.folds} does not match the train posts: rerun make_folds")
    meta = ctx.config.metadata
    keys, extra = user_statistic_keys(ctx, posts)
    stats = TargetStatSpec(keys["train"], keys["test"], meta.target_stat_keys,
                           meta.target_stat_smoothing, meta.tag_target_stats, meta.tag_min_count, extra=extra)
    return X["train"], X["test"], posts["train"]["label"].to_numpy(), folds, stats, posts


def user_statistic_keys(ctx: RunContext, posts: dict[str, pd.DataFrame]):
    """Target-statistic keys of both splits, with what the label-based user statistics need
    (users.trend, users.similar_users), and those statistics for TargetStatSpec.extra."""
    u = ctx.config.users
    keys = {s: posts[s][stat_key_columns(ctx.config)] for s in posts}
    extra = []
    if u.trend:
        extra.append(partial(user_trend_statistics, half_life_days=u.trend_half_life_days,
                             max_lags=u.trend_max_lags, smoothing=u.trend_smoothing))
    if u.similar_users:
        for s in keys:
            cluster = read_parquet(ctx.feature_block("user", s), columns=[CLUSTER])[CLUSTER].to_numpy()
            keys[s] = keys[s].assign(**{CLUSTER: cluster})
        extra.append(partial(similar_user_statistics, smoothing=ctx.config.metadata.target_stat_smoothing))
    return keys, extra


def sample_selection_mask(ctx: RunContext, blocks: list[str], n: int) -> np.ndarray | None:
    """The paper's trick: fit only on the posts with the lowest pretext loss (prototype.sample_selection)."""
    keep = ctx.config.prototype.sample_selection
    if keep >= 1.0 or "proto" not in blocks or read_skipped(ctx.feature_block("proto", "train")):
        return None  # an empty proto block (skipped) has no pretext losses: every post is kept
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


def tuned_params(ctx: RunContext, member: str | None = None) -> dict | None:
    """Parameters found by the tuning stage, when it ran: `member`'s own (tuning.per_member), else
    those of tuning.feature_set."""
    path = ctx.work_dir / "tuning" / "best_params.json"
    if ctx.config.tuning.enabled and path.is_file():
        found = read_json(path)
        return {**ctx.config.gbdt.params, **found.get("members", {}).get(member, found)["params"]}
    return None


def member_frame(posts: dict[str, pd.DataFrame], folds: pd.DataFrame, oof: np.ndarray, test: np.ndarray) -> pd.DataFrame:
    return pd.concat([
        pd.DataFrame({"Pid": posts["train"]["Pid"].to_numpy(), "split": "train", "fold": folds["fold"].to_numpy(), "pred": oof}),
        pd.DataFrame({"Pid": posts["test"]["Pid"].to_numpy(), "split": "test", "fold": -1, "pred": test}),
    ], ignore_index=True)


def active_catboost_members(cfg: Config) -> dict[str, list[str]]:
    """CatBoost members `cb_<set>` (catboost.feature_sets) whose blocks are all produced under this config."""
    if not cfg.catboost.enabled:
        return {}
    unknown = [f for f in cfg.catboost.feature_sets if f not in cfg.gbdt.feature_sets]
    if unknown:
        raise ValueError(f"catboost.feature_sets: {unknown} are not gbdt.feature_sets names; "
                         f"known: {sorted(cfg.gbdt.feature_sets)}")
    lightgbm = active_members(cfg)
    return {f"cb_{name}": lightgbm[name] for name in cfg.catboost.feature_sets if name in lightgbm}


def catboost_factory(cfg: Config):
    c = cfg.catboost

    def make(seed: int, rounds: int | None) -> CatBoostMember:
        return CatBoostMember(c.params, rounds or c.iterations, c.early_stopping_rounds,
                              tuple(f"cat_{k}" for k in c.cat_features), cfg.gbdt.num_threads, seed)
    return make


def run_catboost(ctx: RunContext, member: str, blocks: list[str]) -> None:
    """One CatBoost member: the blocks' features plus the raw `catboost.cat_features` columns, which
    CatBoost encodes by ordered target statistics; the project's out-of-fold statistics are kept for
    every other key (their own for these keys would repeat what CatBoost does)."""
    c = ctx.config.catboost
    X, X_test, y, folds, stats, posts = load_member_data(ctx, blocks)
    available = set(pq.read_schema(ctx.posts("train")).names)
    missing = [k for k in c.cat_features if k not in available]
    if missing:
        raise ValueError(f"catboost.cat_features: {missing} are not columns of {ctx.posts('train')}")
    cats = {s: read_parquet(ctx.posts(s), columns=list(c.cat_features)) for s in ("train", "test")}
    X = X.assign(**{f"cat_{k}": cats["train"][k].to_numpy() for k in c.cat_features})
    X_test = X_test.assign(**{f"cat_{k}": cats["test"][k].to_numpy() for k in c.cat_features})
    stats.key_columns = [k for k in stats.key_columns if k not in c.cat_features]
    fit_mask = sample_selection_mask(ctx, blocks, len(y))
    result = cross_fit(catboost_factory(ctx.config), X, y, folds, X_test, seeds=c.seeds, target_stats=stats,
                       fit_mask=fit_mask, name=member)
    write_parquet(ctx.member_preds(member), member_frame(posts, folds, result.oof, result.test))
    write_json(ctx.member_preds(member).with_suffix(".json"), {
        "member": member, "model": "catboost", "blocks": blocks, "cat_features": c.cat_features,
        "score": result.score, "fold_scores": result.fold_scores, "best_iterations": result.best_iterations,
        "n_features": X.shape[1], "feature_importance": result.feature_importance.head(50).to_dict(),
    })


def run(ctx: RunContext) -> None:
    for member, blocks in active_catboost_members(ctx.config).items():
        run_catboost(ctx, member, blocks)
    for member, blocks in active_members(ctx.config).items():
        params = tuned_params(ctx, member)
        X, X_test, y, folds, stats, posts = load_member_data(ctx, blocks)
        fit_mask = sample_selection_mask(ctx, blocks, len(y))
        result = cross_fit(gbdt_factory(ctx.config, params), X, y, folds, X_test, seeds=ctx.config.gbdt.seeds,
                           target_stats=stats, fit_mask=fit_mask, name=member,
                           scale_refit_rounds=ctx.config.gbdt.adapt_to_size, refit_kfold=ctx.config.gbdt.refit_kfold)
        write_parquet(ctx.member_preds(member), member_frame(posts, folds, result.oof, result.test))
        write_json(ctx.member_preds(member).with_suffix(".json"), {
            "member": member, "model": "lightgbm", "blocks": blocks, "tuned": params is not None, "params": params,
            "score": result.score, "fold_scores": result.fold_scores, "best_iterations": result.best_iterations,
            "n_features": X.shape[1], "feature_importance_gain": result.feature_importance.head(50).to_dict(),
        })


def outputs(ctx: RunContext) -> list[Path]:
    paths = []
    for member in [*active_members(ctx.config), *active_catboost_members(ctx.config)]:
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
    sections=("gbdt", "metadata", "tuning", "prototype", "users", "catboost"),
    modules=("models.cv", "models.gbdt", "models.sizing", "models.catboost_member", "features.target_stats",
             "features.blocks", "features.user_features"),
    description="LightGBM per feature set: out-of-fold and test predictions",
)
