"""Stage `prototype`: the multimodal prototype network's out-of-fold embeddings (feature block `proto`).

Reads the posts tables, the folds and the cached encoder outputs; trains one network
per fold of `feature_fold` (models/train_prototype.py) with per-epoch checkpoints under
work/<ds>/prototype/<run key>/fold_<k>/ (an interrupted run resumes from the last finished
epoch, a finished fold is not redone); writes proto_{train,test}.parquet. The networks
live in the data set's shared folder, keyed by `run_key`, so configs that differ
elsewhere (gbdt, tuning, ensemble, ...) reuse them instead of training them again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from common.io import file_digest, read_parquet, write_json, write_parquet
from features.blocks import check_post_order
from pipeline.catalog import RunContext
from pipeline.stage import Stage, module_digest

log = logging.getLogger(__name__)

SECTIONS = ("prototype", "encoders", "validation")
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
    device = resolve_device(cfg.train.device, "prototype.train.device")
    train_out, test_out = fit_oof(cfg, data["train"], data["test"], folds["feature_fold"].to_numpy(), vocab, backbone,
                                  ctx.config.seed, device, out_dir, key, progress)
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


def run(ctx: RunContext) -> None:
    from models.train_prototype import NothingToLearn
    cfg = ctx.config.prototype
    try:
        train, test, key = build_proto_block(ctx, cfg)
    except NothingToLearn as err:
        # an empty block: members that list it run without it, the report says why
        skipped = {"proto": str(err)}
        log.warning("[prototype] block proto empty, skipped: %s", err)
        for split in ("train", "test"):
            pids = read_parquet(ctx.posts(split), columns=["Pid"])
            write_parquet(ctx.feature_block("proto", split), pids, skipped)
        write_json(ctx.prototype_summary, {"columns": ["Pid"], "skipped": str(err)})
        return
    log.info("proto block: %d columns; mean OOF pretext loss %.3f", train.shape[1] - 1,
             float(np.nanmean(train["_pretext_loss"])))
    write_parquet(ctx.feature_block("proto", "train"), train)
    write_parquet(ctx.feature_block("proto", "test"), test)
    write_json(ctx.prototype_summary, {
        "run_key": key,  # the networks' folder: ctx.prototype_networks(run_key)
        "columns": list(train.columns), "pretext_loss_train_mean": float(np.nanmean(train["_pretext_loss"])),
        "own_class_prob_train_mean": float(np.nanmean(train["proto_p_sub"]))})


def inputs(ctx: RunContext) -> list[Path]:
    from features.encoders import manifest_paths
    # the manifests carry the digests of the arrays they describe; hashing GBs of arrays is not needed
    return [ctx.posts("train"), ctx.posts("test"), ctx.folds] + manifest_paths(ctx.encoder_cache, ctx.config.encoders)


STAGE = Stage(
    name="prototype",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.feature_block("proto", "train"), ctx.feature_block("proto", "test"),
                         ctx.prototype_summary],
    sections=SECTIONS,
    modules=("models.prototype", "models.train_prototype", "common.pca"),
    enabled=lambda ctx: ctx.config.prototype.enabled and ctx.config.encoders.enabled,
    description="prototype network (prompts, prototypes, cross-modal attention): out-of-fold embeddings",
)
