#!/usr/bin/env python
"""Training throughput of the prototype network; prints one JSON line.

    python benchmarks/bench_prototype.py --device cuda            # H200: < 90 s in all
    python benchmarks/bench_prototype.py --device cpu --steps 3   # a quick look on a laptop
    python benchmarks/bench_prototype.py --device cuda --set compile=reduce-overhead   # CUDA graphs

Shapes of the real run with ViT-B/32 features: image 512, text 512, 32 text tokens,
77 subcategories (11 categories, 668 concepts with `hierarchical`), batch 128, and a
text backbone shaped like CLIP-B/32's text transformer (hidden 512, 12 layers, 8
heads, vocab 49408) with random weights (no model hub needed). bf16 autocast on GPU.
The timing is the difference between a run of warmup+steps and a run of warmup steps
through the real training loop (`models.train_prototype.train_model`), so model
construction and warm-up cancel out. Estimates: 4 epochs over 305,613 posts (one
model), and the K-fold out-of-fold stage (K models on (K-1)/K of the posts each).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

from common.devices import resolve_device  # noqa: E402
from features.encoders_text import ClipTextBackbone, TextBackbone  # noqa: E402
from models.train_prototype import ClassVocab, ProtoData, train_model  # noqa: E402
from pipeline.config import PrototypeConfig  # noqa: E402


class RandomClipText(ClipTextBackbone):
    """ClipTextBackbone around a randomly initialised CLIP text tower (no hub); class names
    tokenise to [BOS, one id per word, EOS], like short names do with the real BPE."""

    def __init__(self, hidden: int, layers: int, heads: int, vocab: int, dim: int):
        TextBackbone.__init__(self)
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection
        cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, vocab_size=vocab, max_position_embeddings=77,
                             projection_dim=dim, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0)
        model = CLIPTextModelWithProjection(cfg).eval()
        self.text_model, self.text_projection = model.text_model, model.text_projection
        self.eval().requires_grad_(False)
        self.name, self.model_id, self.width, self.dim, self.max_length = "clip-random", "random", hidden, dim, 77
        self.vocab = vocab

    def tokenizer(self, texts, padding=True, return_tensors="pt"):
        ids = [[self.vocab - 2] + [zlib.crc32(w.encode()) % (self.vocab - 3) + 1 for w in t.split()] + [self.vocab - 1]
               for t in texts]
        length = max(map(len, ids))
        input_ids = torch.tensor([i + [0] * (length - len(i)) for i in ids])
        mask = torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i in ids])
        return {"input_ids": input_ids, "attention_mask": mask}


def synthetic(n: int, args, seed: int = 0) -> tuple[ProtoData, ClassVocab]:
    rng = np.random.default_rng(seed)
    names = {"sub": [f"sub{i} word" for i in range(args.classes)], "cat": [f"cat{i}" for i in range(args.categories)],
             "concept": [f"concept{i}" for i in range(args.concepts)]}
    labels = {lv: rng.integers(0, len(v), n) for lv, v in names.items()}
    vocab = ClassVocab(names=names, sub_to_cat=rng.integers(0, args.categories, args.classes))
    data = ProtoData(
        image=rng.normal(size=(n, args.image_dim)).astype(np.float16), has_image=rng.random(n) > 0.05,
        text=rng.normal(size=(n, args.text_dim)).astype(np.float32),
        tokens=rng.normal(size=(n, args.tokens, args.text_dim)).astype(np.float16),
        token_mask=np.arange(args.tokens)[None] < rng.integers(0, args.tokens + 1, n)[:, None],
        labels=labels, users=np.array([f"u{i % 997}" for i in range(n)]), times=np.arange(n),
        target=rng.normal(6.4, 2.5, n).astype(np.float32))
    return data, vocab


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--classes", type=int, default=77)
    p.add_argument("--categories", type=int, default=11)
    p.add_argument("--concepts", type=int, default=668)
    p.add_argument("--image-dim", type=int, default=512)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512, help="text backbone width")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=49408)
    p.add_argument("--posts", type=int, default=305_613)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="PrototypeConfig field, e.g. --set hierarchical=false")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    changes = {}
    for item in args.overrides:
        key, value = item.split("=", 1)
        base = PrototypeConfig()
        default = next(getattr(part, key) for part in (base.model, base.loss, base.train, base) if hasattr(part, key))
        changes[key] = value.lower() == "true" if isinstance(default, bool) else type(default)(value)
    cfg = PrototypeConfig().with_fields(batch_size=args.batch_size, epochs=1, device=str(device), **changes)
    started = time.perf_counter()
    torch.manual_seed(0)
    backbone = RandomClipText(args.hidden, args.layers, args.heads, args.vocab, args.text_dim)
    n = args.batch_size * (args.warmup + args.steps)
    data, vocab = synthetic(n, args)
    rows = np.arange(n)

    def run(steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_model(cfg, data, rows, vocab, backbone, 0, device, progress=False, max_steps=steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(args.warmup)  # first contact: kernels, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    short, full = run(args.warmup), run(args.warmup + args.steps)
    step_s = max(full - short, 1e-9) / args.steps
    posts_per_s = args.batch_size / step_s
    one_model_s = 4 * args.posts / posts_per_s
    result = {
        "benchmark": "prototype_train", "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "batch_size": args.batch_size, "classes": args.classes,
        "hierarchical": cfg.model.hierarchical, "image_dim": args.image_dim, "text_dim": args.text_dim,
        "compile": cfg.train.compile, "prompt_passes": "shared prefix per context (causal CLIP text tower)",
        "text_backbone": f"random CLIP text {args.layers}x{args.hidden}, {args.heads} heads",
        "step_ms": round(step_s * 1000, 2), "posts_per_s": round(posts_per_s, 1),
        "est_4_epochs_305k_posts_s": round(one_model_s, 1),
        f"est_oof_{args.folds}_folds_s": round(one_model_s * (args.folds - 1), 1),
        "peak_gpu_mem_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                             if device.type == "cuda" else None),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
