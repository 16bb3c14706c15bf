"""Stage `embed_features`: encoder embeddings reduced by PCA (fit on train) -> feature block `emb`."""
from __future__ import annotations

import json
import logging

from common.io import read_parquet, write_parquet
from features.encoders import load_encoded, manifest_paths, output_paths
from features.encoders_reduce import embedding_features
from pipeline.catalog import RunContext
from pipeline.stage import Stage

log = logging.getLogger("smp")
SPLITS = ("train", "test")


def run(ctx: RunContext) -> None:
    cfg = ctx.config.encoders
    pids = {s: read_parquet(ctx.posts(s), columns=["Pid"])["Pid"].astype(str).to_numpy() for s in SPLITS}
    encoded = {s: load_encoded(ctx.encoder_cache, cfg, s) for s in SPLITS}
    train, test, summary = embedding_features(encoded["train"], encoded["test"], pids["train"], pids["test"],
                                              cfg.pca_dim)
    skipped = summary.pop("skipped")
    for part, reason in skipped.items():
        log.warning("[embed_features] block emb: %s part empty, skipped: %s", part, reason)
    write_parquet(ctx.feature_block("emb", "train"), train, skipped)
    write_parquet(ctx.feature_block("emb", "test"), test, skipped)
    log.info("[embed_features] %d columns; PCA %s", train.shape[1] - 1, json.dumps(summary))


def inputs(ctx: RunContext):
    arrays = [p for p in output_paths(ctx.encoder_cache, ctx.config.encoders, SPLITS)
              if p.name.endswith(("_image.npy", "_has_image.npy", "_title.npy", "_tags.npy"))]
    return [ctx.posts(s) for s in SPLITS] + arrays + manifest_paths(ctx.encoder_cache, ctx.config.encoders)


STAGE = Stage(
    name="embed_features",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.feature_block("emb", s) for s in SPLITS],
    sections=("encoders",),
    modules=("features.encoders", "features.encoders_reduce", "common.pca"),
    enabled=lambda ctx: ctx.config.encoders.enabled,
    description="PCA of image, title and tag embeddings (fit on train) -> block `emb`",
)
