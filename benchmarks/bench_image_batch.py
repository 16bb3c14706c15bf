#!/usr/bin/env python
"""EfficientNet-Lite0 alone on a CPU (float32, channels-last): images per CPU-second by how many crops go
through the model at a time, and the largest difference from one pass over the whole batch.

    python benchmarks/bench_image_batch.py                   # 64 random crops of 224 px, parts of 1..64
    python benchmarks/bench_image_batch.py --size 64         # the demo's 64 px

Why `ImageEncoder.embed` runs a CPU batch in parts of 4 x 224 x 224 pixels: the depthwise convolutions
are bound by memory, and a few crops' activations stay in the cores' caches. One JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from features.encoders_image import load_efficientnet_lite0  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="crop side in pixels")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each part size; the best counts")
    args = parser.parse_args(argv)
    encoder = load_efficientnet_lite0("cpu")
    crops = torch.randint(0, 256, (args.n_images, 3, args.size, args.size), dtype=torch.uint8)
    x = ((crops.float() - encoder.mean) / encoder.std).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(rows: int) -> torch.Tensor:
        return torch.cat([encoder.module(part) for part in x.split(rows)])

    whole = run(args.n_images)
    result = {"model": "efficientnet-lite0", "size": args.size, "n_images": args.n_images,
              "torch_threads": torch.get_num_threads(), "parts": {}}
    for rows in (1, 2, 4, 8, 16, 32, 64):
        if rows > args.n_images:
            break
        best, out = 0.0, None
        for _ in range(args.repeats):
            started = time.process_time()
            out = run(rows)
            best = max(best, args.n_images / (time.process_time() - started))
        result["parts"][rows] = {"images_per_cpu_s": round(best, 1),
                                 "max_abs_diff_vs_whole": float((out - whole).abs().max())}
    result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
