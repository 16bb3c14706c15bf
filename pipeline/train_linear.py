"""Stage `train_linear`: ridge members (ensemble.linear_members) on the same folds as LightGBM.

Each member writes work/preds/<member>.parquet and .json exactly like a LightGBM
member, so the blend treats both kinds alike. Target statistics are recomputed
inside each fit by the same `cross_fit`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from common.io import write_json, write_parquet
from models.cv import cross_fit
from models.linear import RidgeRegressor
from pipeline.config import Config
from pipeline.stage import RunContext, Stage
from pipeline.train_gbdt import BLOCK_ENABLED, load_member_data, member_frame, sample_selection_mask, with_user_block

log = logging.getLogger(__name__)


def active_linear_members(cfg: Config) -> dict[str, list[str]]:
    """Linear members whose feature blocks are all produced under this config."""
    members = {}
    for member, blocks in cfg.ensemble.linear_members.items():
        unknown = [b for b in blocks if b not in BLOCK_ENABLED]
        if unknown:
            raise ValueError(f"ensemble.linear_members.{member}: unknown block(s) {unknown}; "
                             f"known: {sorted(BLOCK_ENABLED)}")
        if member in cfg.gbdt.feature_sets:
            raise ValueError(f"ensemble.linear_members.{member}: the name is already a gbdt.feature_sets member")
        if all(BLOCK_ENABLED[b](cfg) for b in blocks):
            members[member] = with_user_block(cfg, blocks)
    return members


def ridge_factory(cfg: Config):
    def make(seed: int, rounds: int | None) -> RidgeRegressor:
        return RidgeRegressor(alpha=cfg.ensemble.ridge_alpha, seed=seed)
    return make


def run(ctx: RunContext) -> None:
    for member, blocks in active_linear_members(ctx.config).items():
        X, X_test, y, folds, stats, posts = load_member_data(ctx, blocks)
        fit_mask = sample_selection_mask(ctx, blocks, len(y))
        # one seed: the closed form does not depend on it
        result = cross_fit(ridge_factory(ctx.config), X, y, folds, X_test, seeds=[0], target_stats=stats,
                           fit_mask=fit_mask, name=member)
        write_parquet(ctx.member_preds(member), member_frame(posts, folds, result.oof, result.test))
        write_json(ctx.member_preds(member).with_suffix(".json"), {
            "member": member, "model": "ridge", "blocks": blocks, "alpha": ctx.config.ensemble.ridge_alpha,
            "score": result.score, "fold_scores": result.fold_scores, "n_features": X.shape[1],
        })


def outputs(ctx: RunContext) -> list[Path]:
    paths = []
    for member in active_linear_members(ctx.config):
        paths += [ctx.member_preds(member), ctx.member_preds(member).with_suffix(".json")]
    return paths


def inputs(ctx: RunContext) -> list[Path]:
    blocks = sorted({b for bs in active_linear_members(ctx.config).values() for b in bs})
    paths = [ctx.posts("train"), ctx.posts("test"), ctx.folds]
    return paths + [ctx.feature_block(b, s) for b in blocks for s in ("train", "test")]


STAGE = Stage(
    name="train_linear",
    run=run,
    inputs=inputs,
    outputs=outputs,
    sections=("ensemble", "metadata", "prototype", "users"),
    modules=("models.cv", "models.linear", "features.target_stats", "features.blocks", "features.user_features"),
    enabled=lambda ctx: bool(active_linear_members(ctx.config)),
    description="ridge members on the same folds: out-of-fold and test predictions",
)
