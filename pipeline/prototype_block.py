"""The prototype block (`proto`) of a prototype config: the K out-of-fold networks, their run key and
the files they are built from. Shared by the stage `prototype` (pipeline/prototype.py) and the ablation
tool (pipeline/ablate.py), which trains variants of it and imports no stage.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from common.io import file_digest, read_parquet
from features.blocks import check_post_order
from pipeline.catalog import RunContext
from pipeline.stage import module_digest

log = logging.getLogger(__name__)

POST_COLUMNS = ["Pid", "Uid", "Postdate", "Category", "Subcategory", "Concept"]


def uses_backbone(cfg) -> bool:
    return cfg.model.use_prompts_global or cfg.model.use_prompts_local


def build_proto_block(ctx: RunContext, cfg, out_dir: Path | None = None, progress: bool = True):
    """Train the K out-of-fold networks of config `cfg` (a PrototypeConfig) and return the
    (train, test) proto tables and the networks' run key; checkpoints and per-fold outputs go under
    `out_dir` (default: ctx.prototype_networks(run key))."""
    import torch

    from features.encoders import load_encoded, load_text_backbone
    from common.devices import resolve_device
    from models.train_prototype import ClassVocab, check_learnable, feature_blocks, fit_oof, make_data

    enc_cfg = ctx.config.encoders
    posts = {s: read_parquet(ctx.posts(s), columns=POST_COLUMNS + (["label"] if s == "train" else []))
             for s in ("train", "test")}
    folds = read_parquet(ctx.folds)
    check_post_order(folds["Pid"], posts["train"]["Pid"], str(ctx.folds), "rerun make_folds")
    vocab = ClassVocab.from_posts(posts["train"])
    data = {s: make_data(load_encoded(ctx.encoder_cache, enc_cfg, s), posts[s], vocab) for s in ("train", "test")}
    check_learnable(data["train"], vocab)
    unseen = int((data["test"].labels["sub"] < 0).sum())
    if unseen:
        log.warning("%d test posts have a subcategory no train post has: their own-class columns are NaN", unseen)
    backbone = load_text_backbone(enc_cfg) if uses_backbone(cfg) else None
    torch.manual_seed(ctx.config.seed)
    key = run_key(ctx, cfg, folds["feature_fold"].to_numpy())
    out_dir = out_dir or ctx.prototype_networks(key)
    train_out, test_out = fit_oof(cfg, data["train"], data["test"], folds["feature_fold"].to_numpy(), vocab, backbone,
                                  ctx.config.seed, resolve_device(cfg.train.device, "prototype.train.device"), out_dir, key, progress)
    train, test = feature_blocks(cfg, train_out, test_out, data["train"], data["test"], vocab,
                                 posts["train"]["Pid"].to_numpy(), posts["test"]["Pid"].to_numpy())
    return train, test, key


def training_fields(cfg) -> dict:
    """What the trained networks depend on: the network, its losses and its training (not how the
    feature block is made from them)."""
    fields = {part: dataclasses.asdict(getattr(cfg, part)) for part in ("model", "loss", "train")}
    # the paper stack also keeps the network-projected parts of every post (models/train_prototype.embed)
    return {**fields, "stack": cfg.stack} if cfg.stack != "pca" else fields


def feature_fold_digest(feature_fold: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(feature_fold, dtype=np.int64).tobytes()).hexdigest()[:16]


def run_key(ctx: RunContext, cfg, feature_fold: np.ndarray) -> str:
    """What a checkpoint was made from: the training config, the inputs, the inner folds
    (`feature_fold` only: a change of validation scheme that keeps them reuses the networks)
    and the network's code."""
    cache: dict = {}
    parts = {"prototype": json.dumps(training_fields(cfg), sort_keys=True, default=str),
             "encoders": ctx.config.digest("encoders"), "seed": ctx.config.seed,
             "inputs": {p.name: file_digest(p, cache) for p in inputs(ctx) if p != ctx.folds},
             "feature_fold": feature_fold_digest(feature_fold),
             "code": module_digest(("models.prototype", "models.train_prototype"))}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def inputs(ctx: RunContext) -> list[Path]:
    from features.encoders import manifest_paths
    # the manifests carry the digests of the arrays they describe; hashing GBs of arrays is not needed
    return [ctx.posts("train"), ctx.posts("test"), ctx.folds] + manifest_paths(ctx.encoder_cache, ctx.config.encoders)
