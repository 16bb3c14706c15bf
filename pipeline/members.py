"""The registry of model members, and the one loop that trains them on the folds.

A member is a model kind (LightGBM, CatBoost, ridge) applied to a set of feature blocks. Each
kind is registered once in KINDS: where the config lists its members, the factory that makes
its estimator (the fit/predict contract of models/gbdt.py), the seeds it averages, and what its
summary adds. `train_members` trains every member of the given kinds with `models.cv.cross_fit`
and writes its out-of-fold and test predictions and summary; the stages train_trees and
train_linear, the tuning stage, the blend, the plots and the report all read this registry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from common.io import read_json, read_parquet, read_skipped, write_json, write_parquet
from features.blocks import check_post_order, join_blocks
from features.target_stats import target_statistics, window_of
from features.user_features import CLUSTER, similar_user_statistics, user_trend_statistics
from models.catboost_member import CatBoostMember
from models.cv import TargetStatSpec, cross_fit
from models.gbdt import LightGBMRegressor
from models.linear import RidgeRegressor
from models.pseudo_label import pseudo_labels
from pipeline.catalog import RunContext
from pipeline.config import Config

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


def _runnable(cfg: Config, entries: dict[str, list[str]], where: str) -> dict[str, list[str]]:
    """The members of one config entry whose blocks are all produced under this config."""
    members = {}
    for member, blocks in entries.items():
        unknown = [b for b in blocks if b not in BLOCK_ENABLED]
        if unknown:
            raise ValueError(f"{where}.{member}: unknown block(s) {unknown}; known: {sorted(BLOCK_ENABLED)}")
        if all(BLOCK_ENABLED[b](cfg) for b in blocks):
            members[member] = with_user_block(cfg, blocks)
    return members


def lightgbm_members(cfg: Config) -> dict[str, list[str]]:
    """gbdt.feature_sets: one LightGBM member per feature set."""
    members = _runnable(cfg, cfg.gbdt.feature_sets, "gbdt.feature_sets")
    if not members:
        raise ValueError("no gbdt.feature_sets member can run under this config")
    return members


def catboost_members(cfg: Config) -> dict[str, list[str]]:
    """catboost.feature_sets: CatBoost members `cb_<set>` on the blocks of those LightGBM feature sets."""
    if not cfg.catboost.enabled:
        return {}
    unknown = [f for f in cfg.catboost.feature_sets if f not in cfg.gbdt.feature_sets]
    if unknown:
        raise ValueError(f"catboost.feature_sets: {unknown} are not gbdt.feature_sets names; "
                         f"known: {sorted(cfg.gbdt.feature_sets)}")
    lightgbm = lightgbm_members(cfg)
    return {f"cb_{name}": lightgbm[name] for name in cfg.catboost.feature_sets if name in lightgbm}


def ridge_members(cfg: Config) -> dict[str, list[str]]:
    """ensemble.linear_members: ridge members, for the blend's diversity."""
    clash = [m for m in cfg.ensemble.linear_members if m in cfg.gbdt.feature_sets]
    if clash:
        raise ValueError(f"ensemble.linear_members.{clash[0]}: the name is already a gbdt.feature_sets member")
    return _runnable(cfg, cfg.ensemble.linear_members, "ensemble.linear_members")


def lightgbm_factory(cfg: Config, params: dict | None = None):
    g = cfg.gbdt

    def make(seed: int, rounds: int | None) -> LightGBMRegressor:
        return LightGBMRegressor(params or g.params, rounds or g.num_boost_round, g.early_stopping_rounds,
                                 g.num_threads, seed, adapt_to_size=g.adapt_to_size, stop_metric=g.stop_metric)
    return make


def catboost_factory(cfg: Config, params: dict | None = None):
    c = cfg.catboost

    def make(seed: int, rounds: int | None) -> CatBoostMember:
        return CatBoostMember(c.params, rounds or c.iterations, c.early_stopping_rounds,
                              tuple(f"cat_{k}" for k in c.cat_features), cfg.gbdt.num_threads, seed)
    return make


def ridge_factory(cfg: Config, params: dict | None = None):
    def make(seed: int, rounds: int | None) -> RidgeRegressor:
        return RidgeRegressor(alpha=cfg.ensemble.ridge_alpha, seed=seed)
    return make


@dataclass(frozen=True)
class MemberKind:
    """One kind of model member.

    members: its config entry resolved (member name -> feature blocks); factory(cfg, params) ->
    make(seed, rounds) -> an estimator with fit(X, y, X_val, y_val) / predict(X); seeds: the seeds
    whose fits it averages; tuned: it takes the tune stage's parameters; raw_categoricals: posts
    columns it gets as categorical features of its own (`cat_<column>`), which the project's
    target statistics then leave to it; pseudo_labels: (share, weight) when the kind is fit a
    second time with test posts labelled by its first fit (models/pseudo_label.py), else None;
    summary: what its summary JSON adds; weighted: see the field.
    """
    name: str
    members: Callable[[Config], dict[str, list[str]]]
    factory: Callable[..., Callable[[int, int | None], Any]]
    seeds: Callable[[Config], list[int]]
    tuned: bool = False
    raw_categoricals: Callable[[Config], list[str]] = lambda cfg: []
    cross_fit_options: Callable[[Config], dict] = lambda cfg: {}
    pseudo_labels: Callable[[Config], tuple[float, float] | None] = lambda cfg: None
    summary: Callable[[Config, Any], dict] = lambda cfg, result: {}
    weighted: bool = False  # its fits take the train posts' test-likeness weights (validation.adversarial_weights)


KINDS: dict[str, MemberKind] = {
    "lightgbm": MemberKind(
        "lightgbm", lightgbm_members, lightgbm_factory, lambda cfg: cfg.gbdt.seeds, tuned=True, weighted=True,
        cross_fit_options=lambda cfg: {"scale_refit_rounds": cfg.gbdt.adapt_to_size,
                                       "refit_kfold": cfg.gbdt.refit_kfold},
        pseudo_labels=lambda cfg: ((cfg.gbdt.pseudo_label_share, cfg.gbdt.pseudo_label_weight)
                                   if cfg.gbdt.pseudo_label else None),
        # every column's gain, not the top 50: shares per block (benchmarks/analyse_prototype.py)
        summary=lambda cfg, r: {"best_iterations": r.best_iterations, "pseudo_labelled": cfg.gbdt.pseudo_label,
                                "feature_importance_gain": r.feature_importance.to_dict()}),
    "catboost": MemberKind(
        "catboost", catboost_members, catboost_factory, lambda cfg: cfg.catboost.seeds,
        raw_categoricals=lambda cfg: list(cfg.catboost.cat_features),
        summary=lambda cfg, r: {"cat_features": cfg.catboost.cat_features, "best_iterations": r.best_iterations,
                                "feature_importance": r.feature_importance.head(50).to_dict()}),
    # one seed: the closed form does not depend on it
    "ridge": MemberKind("ridge", ridge_members, ridge_factory, lambda cfg: [0],
                        summary=lambda cfg, r: {"alpha": cfg.ensemble.ridge_alpha}),
}


def members_of(cfg: Config, kinds: tuple[str, ...] = tuple(KINDS)) -> dict[str, tuple[str, list[str]]]:
    """Every member of the given kinds under this config: name -> (kind, feature blocks)."""
    out = {}
    for kind in kinds:
        for member, blocks in KINDS[kind].members(cfg).items():
            out[member] = (kind, blocks)
    return out


# --- the data of a member ------------------------------------------------------------------------
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
    check_post_order(folds["Pid"], posts["train"]["Pid"], str(ctx.folds), "rerun make_folds")
    meta = ctx.config.metadata
    window = window_of(folds["fold"].to_numpy())  # a time holdout: every statistic over earlier posts only
    keys, extra = user_statistic_keys(ctx, posts, window)
    if window == "folds":
        stats = TargetStatSpec(keys["train"], keys["test"], meta.target_stat_keys,
                               meta.target_stat_smoothing, meta.tag_target_stats, meta.tag_min_count, extra=extra)
    else:  # models/cv.py calls target_statistics in the window `folds`: the expanding one comes as an extra
        expanding = partial(target_statistics, key_columns=meta.target_stat_keys, smoothing=meta.target_stat_smoothing,
                            tags=meta.tag_target_stats, tag_min_count=meta.tag_min_count, window=window)
        stats = TargetStatSpec(keys["train"], keys["test"], [], meta.target_stat_smoothing, tags=False,
                               extra=[expanding, *extra])
    return X["train"], X["test"], posts["train"]["label"].to_numpy(), folds, stats, posts


def user_statistic_keys(ctx: RunContext, posts: dict[str, pd.DataFrame], window: str = "folds"):
    """Target-statistic keys of both splits, with what the label-based user statistics need
    (users.trend, users.similar_users), and those statistics (in `window`) for TargetStatSpec.extra."""
    u = ctx.config.users
    keys = {s: posts[s][stat_key_columns(ctx.config)] for s in posts}
    extra = []
    if u.trend:
        extra.append(partial(user_trend_statistics, half_life_days=u.trend_half_life_days,
                             max_lags=u.trend_max_lags, smoothing=u.trend_smoothing, window=window))
    if u.similar_users:
        for s in keys:
            cluster = read_parquet(ctx.feature_block("user", s), columns=[CLUSTER])[CLUSTER].to_numpy()
            keys[s] = keys[s].assign(**{CLUSTER: cluster})
        extra.append(partial(similar_user_statistics, smoothing=ctx.config.metadata.target_stat_smoothing,
                             window=window))
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


def adversarial_weights(ctx: RunContext, kind: MemberKind, train_pids: np.ndarray) -> np.ndarray | None:
    """The train posts' test-likeness weights (stage `adversarial`) for a kind that takes them, when
    validation.adversarial_weights is on; else None (every fit unweighted, as without the switch)."""
    if not (kind.weighted and ctx.config.validation.adversarial_weights):
        return None
    frame = read_parquet(ctx.adversarial_posts, columns=["Pid", "split", "weight"])
    train = frame[frame["split"] == "train"]
    check_post_order(train["Pid"], train_pids, str(ctx.adversarial_posts), "rerun the adversarial stage")
    return train["weight"].to_numpy(dtype=np.float64)


def tuned_params(ctx: RunContext, member: str | None = None) -> dict | None:
    """Parameters found by the tuning stage, when it ran: `member`'s own (tuning.per_member), else
    those of tuning.feature_set."""
    if ctx.config.tuning.enabled and ctx.best_params.is_file():
        found = read_json(ctx.best_params)
        return {**ctx.config.gbdt.params, **found.get("members", {}).get(member, found)["params"]}
    return None


def member_frame(posts: dict[str, pd.DataFrame], folds: pd.DataFrame, oof: np.ndarray, test: np.ndarray,
                 refit_check: np.ndarray | None = None) -> pd.DataFrame:
    """Every post's prediction; with validation.refit_check a column `refit_check` too (models/cv.py)."""
    frame = pd.concat([
        pd.DataFrame({"Pid": posts["train"]["Pid"].to_numpy(), "split": "train", "fold": folds["fold"].to_numpy(), "pred": oof}),
        pd.DataFrame({"Pid": posts["test"]["Pid"].to_numpy(), "split": "test", "fold": -1, "pred": test}),
    ], ignore_index=True)
    if refit_check is not None:
        frame["refit_check"] = np.r_[refit_check, np.full(len(test), np.nan)]
    return frame


# --- the one training loop ------------------------------------------------------------------------
def train_member(ctx: RunContext, member: str, kind: MemberKind, blocks: list[str]) -> None:
    """Cross-fit one member on the folds; write its predictions and its summary."""
    cfg = ctx.config
    X, X_test, y, folds, stats, posts = load_member_data(ctx, blocks)
    raw = kind.raw_categoricals(cfg)
    if raw:
        # the raw key columns as categoricals the model encodes itself; the project's out-of-fold
        # statistics are kept for every other key (their own for these keys would repeat it)
        available = set(pq.read_schema(ctx.posts("train")).names)
        missing = [k for k in raw if k not in available]
        if missing:
            raise ValueError(f"{kind.name}.cat_features: {missing} are not columns of {ctx.posts('train')}")
        cats = {s: read_parquet(ctx.posts(s), columns=raw) for s in ("train", "test")}
        X = X.assign(**{f"cat_{k}": cats["train"][k].to_numpy() for k in raw})
        X_test = X_test.assign(**{f"cat_{k}": cats["test"][k].to_numpy() for k in raw})
        stats.key_columns = [k for k in stats.key_columns if k not in raw]
    params = tuned_params(ctx, member) if kind.tuned else None
    fit = partial(cross_fit, kind.factory(cfg, params), X, y, folds, X_test, seeds=kind.seeds(cfg), target_stats=stats,
                  fit_mask=sample_selection_mask(ctx, blocks, len(y)), refit_check=cfg.validation.refit_check,
                  sample_weight=adversarial_weights(ctx, kind, posts["train"]["Pid"].to_numpy()),
                  **kind.cross_fit_options(cfg))
    result = fit(name=member)
    pseudo = kind.pseudo_labels(cfg)
    if pseudo is not None:  # stage 2: refit with the test posts, labelled by stage 1
        share, weight = pseudo
        result = fit(name=f"{member} + pseudo-labels", pseudo=pseudo_labels(result, share, weight))
    write_parquet(ctx.member_preds(member), member_frame(posts, folds, result.oof, result.test, result.refit_check))
    write_json(ctx.member_summary(member), {
        "member": member, "model": kind.name, "blocks": blocks,
        **({"tuned": params is not None, "params": params} if kind.tuned else {}),
        # score: the report slice's (models/validation.py); selection_score: where the rounds were chosen
        "score": result.score, "selection_score": result.selection_score, "fold_scores": result.fold_scores,
        **({"refit_check_score": result.refit_check_score} if result.refit_check_score else {}),
        "n_features": X.shape[1],
        **kind.summary(cfg, result),
    })


def train_members(ctx: RunContext, kinds: tuple[str, ...]) -> None:
    for member, (kind, blocks) in members_of(ctx.config, kinds).items():
        train_member(ctx, member, KINDS[kind], blocks)


def member_outputs(ctx: RunContext, kinds: tuple[str, ...]) -> list[Path]:
    return [p for m in members_of(ctx.config, kinds) for p in (ctx.member_preds(m), ctx.member_summary(m))]


def member_inputs(ctx: RunContext, kinds: tuple[str, ...]) -> list[Path]:
    blocks = sorted({b for _, bs in members_of(ctx.config, kinds).values() for b in bs})
    paths = [ctx.posts("train"), ctx.posts("test"), ctx.folds]
    paths += [ctx.feature_block(b, s) for b in blocks for s in ("train", "test")]
    if any(KINDS[k].tuned for k in kinds) and ctx.config.tuning.enabled and ctx.best_params.is_file():
        paths.append(ctx.best_params)
    if any(KINDS[k].weighted for k in kinds) and ctx.config.validation.adversarial_weights:
        paths.append(ctx.adversarial_posts)
    return paths
