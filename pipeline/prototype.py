"""Stage `prototype`: the multimodal prototype network's out-of-fold embeddings (feature block `proto`).

Reads the posts tables, the folds and the cached encoder outputs; trains one network
per fold of `feature_fold` (models/train_prototype.py) with per-epoch checkpoints under
work/<ds>/prototype/<run key>/fold_<k>/ (an interrupted run resumes from the last finished
epoch, a finished fold is not redone); writes proto_{train,test}.parquet. The networks
live in the data set's shared folder, keyed by `run_key` (pipeline/prototype_block.py), so configs that differ
elsewhere (gbdt, tuning, ensemble, ...) reuse them instead of training them again.
"""
from __future__ import annotations

import logging

import numpy as np

from common.io import read_parquet, write_json, write_parquet
from pipeline.catalog import RunContext
from pipeline.prototype_block import build_proto_block, inputs
from pipeline.stage import Stage

log = logging.getLogger(__name__)

SECTIONS = ("prototype", "encoders", "validation")


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


STAGE = Stage(
    name="prototype",
    run=run,
    inputs=inputs,
    outputs=lambda ctx: [ctx.feature_block("proto", "train"), ctx.feature_block("proto", "test"),
                         ctx.prototype_summary],
    sections=SECTIONS,
    modules=("pipeline.prototype_block", "models.prototype", "models.train_prototype", "common.pca"),
    enabled=lambda ctx: ctx.config.prototype.enabled and ctx.config.encoders.enabled,
    description="prototype network (prompts, prototypes, cross-modal attention): out-of-fold embeddings",
)
