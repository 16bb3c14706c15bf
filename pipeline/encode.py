#!/usr/bin/env python
"""Stage `encode`: image and text embeddings of every post, plus the `imgstats` feature block.

Resumable: each batch's outputs go to a chunk file as soon as the batch is done;
a rerun (after a crash or Ctrl-C) continues from the chunks that exist.

Standalone, e.g. two GPUs or two machines, then one merge:

    python pipeline/encode.py --work-dir W --shard 0/2      # (each on its own GPU / machine)
    python pipeline/encode.py --work-dir W --shard 1/2
    python pipeline/encode.py --work-dir W                   # merge: encodes what is left, joins the parts

Shards that ran in other work folders: `--merge-from W1 W2` copies their chunk
files here first. Use the same --config/--set for every shard and the merge
(--data-dir for the real SMPD, as for run_all.py). `CUDA_VISIBLE_DEVICES=k`
picks the GPU of a shard.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# as in run_all.py: OpenMP threads that spin while waiting stall on a busy machine; set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from common.devices import resolve_device  # noqa: E402
from common.io import read_npy, read_parquet, write_parquet  # noqa: E402
from features.encoders import CLIP, output_paths  # noqa: E402
from features.encoders_image import load_image_encoder  # noqa: E402
from features.encoders_run import (  # noqa: E402
    SplitInputs, copy_chunks, image_files_signature, image_pass, parse_shard, text_pass,
)
from features.encoders_clip import load_clip_model  # noqa: E402
from features.encoders_text import load_text_encoder  # noqa: E402
from features.image_stats import COLUMNS as IMGSTATS_COLUMNS  # noqa: E402
from features.smpd import data_image_path  # noqa: E402
from pipeline.catalog import RunContext, add_context_arguments, encoder_cache, make_context  # noqa: E402
from pipeline.stage import Stage  # noqa: E402

log = logging.getLogger("smp")
SPLITS = ("train", "test")
POST_COLUMNS = ["Pid", "Title", "Alltags", "Mediatype", "img_path"]


class _Models:
    """Loads each model once, on first use (a run with every array up to date loads none)."""

    def __init__(self, enc_cfg):
        self.cfg = enc_cfg
        self.device = resolve_device(enc_cfg.device, "encoders.device")
        self._clip = self._image = self._text = None

    def clip(self):
        if self._clip is None:
            self._clip = load_clip_model(self.cfg.clip_model)
        return self._clip

    def image(self):
        if self._image is None:
            clip = self.clip() if self.cfg.image == CLIP else None
            self._image = load_image_encoder(self.cfg, self.device, clip)
            log.info("[encode] image encoder %s on %s (%s)", self._image.name, self.device, self._image.precision)
        return self._image

    def text(self):
        if self._text is None:
            clip = self.clip() if self.cfg.text == CLIP else None
            self._text = load_text_encoder(self.cfg, self.device, clip)
            log.info("[encode] text encoder %s on %s (%s)", self._text.name, self.device, self._text.precision)
        return self._text


def encode_posts(ctx: RunContext, shard: str = "", progress: bool = True) -> bool:
    """Encode both splits (or one shard of them). True when the final arrays are complete."""
    cfg = ctx.config.encoders
    parse_shard(shard)  # fail early on a malformed shard
    models = _Models(cfg)
    complete = True
    results = []
    # one bar for the stage: its total grows as each split's image and text pass finds its work
    with tqdm(total=0, desc="encode", unit="item", disable=not progress) as bar:
        for split in SPLITS:
            posts = read_parquet(ctx.posts(split), columns=POST_COLUMNS)
            inputs = SplitInputs.from_posts(posts, ctx.data_dir)
            results += [(split, image_pass(inputs, split, cfg, ctx.encoder_cache, models.image, shard, progress,
                                           bar, force=ctx.force)),
                        (split, text_pass(inputs, split, cfg, ctx.encoder_cache, models.text, shard, progress, bar,
                                          force=ctx.force))]
    for split, result in results:
        if not result.done:
            complete = False
            log.info("[encode] %s %s: encoded %d batches in this run; %d batches not finished yet (other "
                     "shards); run without --shard to finish and join them", split, result.kind,
                     result.encoded, result.missing)
    if complete:
        write_imgstats(ctx)
    return complete


def image_files(ctx: RunContext) -> str:
    """Signature (path, size, mtime) of every listed image file: a replaced image reruns the stage, whose
    image pass then re-encodes only what changed in content."""
    return "".join(image_files_signature([data_image_path(ctx.data_dir, p) for p in
                                          read_parquet(ctx.posts(s), columns=["img_path"])["img_path"]])
                   for s in SPLITS)


def imgstats_array(ctx: RunContext, split: str) -> Path:
    from features.encoders import encoder_dir, encoder_folder
    return encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image")) / f"{split}_imgstats.npy"


def write_imgstats(ctx: RunContext) -> None:
    """Feature block `imgstats` of both splits; without a usable image in train it has no columns."""
    stats = {s: read_npy(imgstats_array(ctx, s)) for s in SPLITS}
    skipped = {}
    if not np.isfinite(stats["train"]).any():
        skipped["imgstats"] = "no train post has a usable image"
        log.warning("[encode] block imgstats empty, skipped: %s", skipped["imgstats"])
    for split in SPLITS:
        pids = read_parquet(ctx.posts(split), columns=["Pid"])["Pid"].astype(str).to_numpy()
        block = pd.DataFrame({"Pid": pids})
        if not skipped:
            block = pd.concat([block, pd.DataFrame(stats[split].astype("float32"), columns=list(IMGSTATS_COLUMNS))],
                              axis=1)
        write_parquet(ctx.feature_block("imgstats", split), block, skipped)


def run(ctx: RunContext) -> None:
    if not encode_posts(ctx, ctx.config.encoders.shard):
        raise RuntimeError("encode: config encoders.shard is set, so this run encoded one shard only; "
                           "clear it (--set encoders.shard='') to join the shards")


def outputs(ctx: RunContext) -> list[Path]:
    return (output_paths(ctx.encoder_cache, ctx.config.encoders, SPLITS)
            + [imgstats_array(ctx, s) for s in SPLITS]
            + [ctx.feature_block("imgstats", s) for s in SPLITS])


STAGE = Stage(
    name="encode",
    run=run,
    inputs=lambda ctx: [ctx.posts(s) for s in SPLITS],
    outputs=outputs,
    sections=("encoders",),
    modules=("features.encoders", "features.encoders_clip", "features.encoders_image", "features.encoders_text",
             "features.encoders_run", "features.image_stats", "features.smpd", "common.written"),
    enabled=lambda ctx: ctx.config.encoders.enabled,
    description="image + text embeddings (resumable, shardable) and image statistics",
    fingerprint=image_files,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_context_arguments(parser)  # the same data, config and folders as run_all.py
    parser.add_argument("--shard", default="", help="i/n: encode only part i of n (0-based)")
    parser.add_argument("--merge-from", type=Path, nargs="*", default=[],
                        help="work folders of shard runs whose chunk files are copied here before joining")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    ctx = make_context(args)
    missing = [p for p in (ctx.posts(s) for s in SPLITS) if not p.exists()]
    if missing:
        print(f"error: {missing[0]} is missing; run `python pipeline/run_all.py --stages read_data` first "
              "(same --work-dir/--data-dir)", file=sys.stderr)
        return 2
    if args.merge_from:
        log.info("[encode] copied %d chunk files from %s", copy_chunks([encoder_cache(p) for p in args.merge_from], ctx.encoder_cache),
                 [str(p) for p in args.merge_from])
    complete = encode_posts(ctx, args.shard, progress=not args.no_progress)
    log.info("[encode] %s", "all arrays written" if complete else f"shard {args.shard} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
