"""Stage `user_features`: label-free user block `user` (profile texts, post mix, posting rhythm, clusters).

On when any label-free part of the `users` config is on (features/user_features.py). The profile
texts are embedded by the text encoder of `encoders.text`, loaded here only when `users.text_dims`
is positive and the encoders are on.
"""
from __future__ import annotations

import json
import logging

from common.io import read_parquet, write_parquet
from features.user_features import build_user_block
from pipeline.catalog import RunContext
from pipeline.stage import Stage

log = logging.getLogger("smp")
SPLITS = ("train", "test")


def _text_encoder(ctx: RunContext):
    """The text encoder's `sentences`, loaded on first call (a data set without user texts loads nothing)."""
    enc = ctx.config.encoders
    if ctx.config.users.text_dims <= 0 or not enc.enabled:
        return None
    loaded = []

    def sentences(texts: list[str]):
        if not loaded:
            from common.devices import resolve_device  # torch: only when needed
            from features.encoders_text import load_text_encoder
            loaded.append(load_text_encoder(enc, resolve_device(enc.device, "encoders.device")))
        return loaded[0].sentences(texts)
    return sentences


def run(ctx: RunContext) -> None:
    cfg = ctx.config.users
    train, test = (read_parquet(ctx.posts(s)) for s in SPLITS)
    block_train, block_test, summary = build_user_block(
        train, test, _text_encoder(ctx), text_dims=cfg.text_dims, mix=cfg.mix, timing=cfg.timing,
        clusters=cfg.similar_users, n_clusters=cfg.n_clusters, max_categories=cfg.max_categories,
        seed=ctx.config.seed)
    write_parquet(ctx.feature_block("user", "train"), block_train)
    write_parquet(ctx.feature_block("user", "test"), block_test)
    log.info("[user_features] %s", json.dumps({k: v for k, v in summary.items() if k != "columns"}))


STAGE = Stage(
    name="user_features",
    run=run,
    inputs=lambda ctx: [ctx.posts(s) for s in SPLITS],
    outputs=lambda ctx: [ctx.feature_block("user", s) for s in SPLITS],
    sections=("users", "encoders"),
    modules=("features.user_features", "features.encoders_text", "common.pca"),
    enabled=lambda ctx: ctx.config.users.block_on(ctx.config.encoders.enabled),
    description="user profile texts, post mix, posting rhythm and profile clusters -> block `user`",
)
