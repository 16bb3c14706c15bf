#!/usr/bin/env python
"""Speed of the `encode` stage's image path (decode in DataLoader workers, batched model, chunk writes).

CPU (default): the stage (float32, and bf16 autocast) against a plain
one-image-at-a-time float32 loop, same model (EfficientNet-Lite0 as its package
ships it), same generated JPEGs, one run:

    python benchmarks/bench_encode.py                       # 512 photos of 500x375
    python benchmarks/bench_encode.py --n-images 192 --workers 1 --precisions fp32

GPU: CLIP vision towers of ViT-B/32 and ViT-L/14 shape with random weights (the
cost of real ones), bf16 autocast, real JPEGs decoded by `--workers` processes:

    python benchmarks/bench_encode.py --device cuda --arch vit-b-32,vit-l-14
    python benchmarks/bench_encode.py --device cpu --arch vit-b-32 --n-images 64   # check of that path on a CPU
    python benchmarks/bench_encode.py --model-cpu-seconds --arch vit-b-32   # CPU s an image: Lite0 beside CLIP

Prints one JSON line: images/s (steady state, after the first batch, and over
the whole pass: DataLoader start, first batch and the final join included), the
ratios to the plain loop, for the GPU the estimated hours for all 486,194 SMPD
images (steady rate).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

# as in run_all.py: OpenMP threads that spin while waiting stall on a busy machine; set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.synth_smpd import write_photo  # noqa: E402
from features.encoders import array_path  # noqa: E402
from features.encoders_image import ImageEncoder, ImagePreprocess, load_efficientnet_lite0  # noqa: E402
from features.encoders_run import SplitInputs, image_file_digests, image_pass  # noqa: E402
from pipeline.config import EncoderConfig  # noqa: E402

SMPD_IMAGES = 305_613 + 180_581
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# CLIPVisionConfig sizes of the OpenAI checkpoints
ARCHS = {
    "vit-b-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     patch_size=32, image_size=224, projection_dim=512),
    "vit-l-14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     patch_size=14, image_size=224, projection_dim=768),
}


def make_jpegs(folder: Path, n: int, width: int, height: int, processes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    jobs = [(p, i, width, height) for i, p in enumerate(paths)]
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(write_photo, jobs, chunksize=32)
    else:
        for job in jobs:
            write_photo(job)
    return paths


def stage_rate(paths: list[Path], encoder: ImageEncoder, enc_cfg: EncoderConfig, work_dir: Path) -> dict:
    """Images/s of the stage's image pass (chunk files and final arrays included)."""
    stamps = []
    embed = encoder.embed

    def timed_embed(crops):
        out = embed(crops)
        stamps.append((time.perf_counter(), len(crops)))
        return out

    encoder.embed = timed_embed
    inputs = SplitInputs(pids=[str(i) for i in range(len(paths))], image_paths=list(paths),
                         titles=[""] * len(paths), tags=[""] * len(paths))
    # what the pass spends on its content key (a sha256 of every file), timed on its own first
    started = time.perf_counter()
    image_file_digests(inputs, list(range(len(paths))), None, enc_cfg.num_workers, progress=False)
    digest_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = image_pass(inputs, "bench", enc_cfg, work_dir, lambda: encoder, progress=False)
    total = time.perf_counter() - started
    encoder.embed = embed
    assert result.done and result.info["n_has_image"] == len(paths), result
    steady_images = sum(n for _, n in stamps[1:])
    steady_time = stamps[-1][0] - stamps[0][0]
    return {"images_per_s": round(steady_images / steady_time, 1) if steady_time > 0 else None,
            "images_per_s_whole_pass": round(len(paths) / total, 1), "seconds": round(total, 2),
            "digest_seconds": round(digest_seconds, 3), "digest_share_of_pass": round(digest_seconds / total, 4)}


def plain_loop_rate(paths: list[Path]) -> dict:
    """The loop one writes first: open, resize, crop, one image through the model as the package ships it."""
    model = load_efficientnet_lite0(fuse=False).module.cpu().to(memory_format=torch.contiguous_format)
    started = time.perf_counter()
    for path in paths:
        img = Image.open(path).convert("RGB")
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)
        x = torch.from_numpy((x - 127.0) / 128.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            model(x).numpy()
    seconds = time.perf_counter() - started
    return {"images_per_s": round(len(paths) / seconds, 1), "seconds": round(seconds, 2)}


def run_cpu(args, folder: Path) -> dict:
    """The stage (at each of `--precisions`) and the plain loop alternate `--repeats` times; the best rate of
    each counts (a shared machine's load only ever slows a run down)."""
    paths = make_jpegs(folder / "jpegs", args.n_images, args.width, args.height, processes=1)
    stages = {p: [] for p in args.precisions.split(",")}
    plains = []
    for repeat in range(args.repeats):
        for precision, runs in stages.items():
            enc_cfg = EncoderConfig(image="efficientnet-lite0", batch_size=args.batch_size, num_workers=args.workers,
                                    device="cpu", precision=precision)
            encoder = load_efficientnet_lite0("cpu", precision=precision)
            runs.append(stage_rate(paths, encoder, enc_cfg, folder / f"work-{precision}-{repeat}"))
        plains.append(plain_loop_rate(paths))
    plain = max(plains, key=lambda r: r["images_per_s"])
    result = {"mode": "cpu", "model": "efficientnet-lite0", "n_images": len(paths), "size": [args.width, args.height],
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "workers": args.workers,
              "batch_size": args.batch_size, "repeats": args.repeats, "plain_loop": plain,
              "all_plain_images_per_s": [r["images_per_s"] for r in plains]}
    for precision, runs in stages.items():
        best = max(runs, key=lambda r: r["images_per_s_whole_pass"])
        result[f"stage_{precision}"] = best
        result[f"ratio_{precision}"] = round(best["images_per_s_whole_pass"] / plain["images_per_s"], 2)
        result[f"ratio_steady_{precision}"] = round(max(r["images_per_s"] for r in runs) / plain["images_per_s"], 2)
        result[f"all_stage_{precision}_images_per_s"] = [r["images_per_s_whole_pass"] for r in runs]
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def clip_vision_encoder(arch: str, device: torch.device) -> ImageEncoder:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from features.encoders_image import _ClipImageTower
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute for ViT-L
        tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**ARCHS[arch]))
    prep = ImagePreprocess(resize=224, crop=224, mean=CLIP_MEAN, std=CLIP_STD)
    return ImageEncoder(f"random-{arch}", f"random weights, CLIPVisionConfig {ARCHS[arch]}",
                        _ClipImageTower(tower), ARCHS[arch]["projection_dim"], prep, device)


def run_clip_shapes(args, folder: Path) -> dict:
    device = torch.device(args.device)
    started = time.perf_counter()
    paths = make_jpegs(folder / "jpegs", args.n_images, args.width, args.height, processes=os.cpu_count() or 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    result = {"mode": "clip-shapes", "device": name, "torch": torch.__version__,
              "n_images": len(paths), "size": [args.width, args.height], "jpeg_seconds": round(time.perf_counter() - started, 1),
              "workers": args.workers, "batch_size": args.batch_size, "archs": {}}
    decoders = args.decoders.split(",")
    for arch in args.arch.split(","):
        encoder = clip_vision_encoder(arch, device)
        encoder.embed(torch.zeros((args.batch_size, 3, 224, 224), dtype=torch.uint8))  # CUDA/cuBLAS warm-up
        arrays = {}
        for decoder in decoders:
            enc_cfg = EncoderConfig(image="clip", clip_model=f"random-{arch}", batch_size=args.batch_size,
                                    num_workers=args.workers, device=args.device, decoder=decoder)
            work_dir = folder / f"work-{arch}-{decoder}"
            rate = {"precision": encoder.precision, "decoder": decoder, **stage_rate(paths, encoder, enc_cfg, work_dir)}
            rate["hours_for_smpd_486k"] = round(SMPD_IMAGES / rate["images_per_s"] / 3600, 2)
            result["archs"][arch if len(decoders) == 1 else f"{arch}/{decoder}"] = rate
            arrays[decoder] = np.load(array_path(work_dir, enc_cfg, "bench", "image")).astype(np.float32)
        if len(arrays) > 1:  # agreement of each decoder's embeddings with the first one's, per image
            first, *others = arrays
            for other in others:
                a, b = arrays[first], arrays[other]
                cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
                result["archs"][f"{arch}/{other}"][f"cosine_to_{first}"] = {
                    "mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
        del encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    return result


def model_cpu_seconds(args) -> dict:
    """CPU seconds an image of the model alone (this process's user + sys, every thread: less sensitive to a
    shared machine's load than images/s) for EfficientNet-Lite0 and each CLIP shape of --arch, on
    the same decoded crops: the price of CLIP on a CPU against the offline stand-in."""
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args.batch_size, 3, 224, 224), dtype=np.uint8))
    encoders = {"efficientnet-lite0": load_efficientnet_lite0()}
    encoders.update({arch: clip_vision_encoder(arch, torch.device("cpu")) for arch in args.arch.split(",")})
    out = {"mode": "model-cpu-seconds", "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "per_image_cpu_s": {}}
    for name, encoder in encoders.items():
        encoder.embed(crops[:2])  # first call: allocations and kernels chosen
        best = math.inf
        for _ in range(args.repeats):
            started = time.process_time()
            encoder.embed(crops)
            best = min(best, time.process_time() - started)
        out["per_image_cpu_s"][name] = round(best / len(crops), 4)
    first = out["per_image_cpu_s"]["efficientnet-lite0"]
    out["ratio_to_efficientnet"] = {k: round(v / first, 1) for k, v in out["per_image_cpu_s"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (stage vs plain loop) or cuda (CLIP shapes)")
    parser.add_argument("--arch", help=f"CLIP shapes to time, comma-separated, of {sorted(ARCHS)} "
                                       "(default with cuda: all; with cpu and --arch: a quick check of this path)")
    parser.add_argument("--n-images", type=int, help="default: 512 (cpu), 4000 (cuda)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--batch-size", type=int, help="default: 32 (cpu), 256 (cuda)")
    parser.add_argument("--workers", type=int, help="DataLoader decoding processes; default: 2 (cpu), 12 (cuda)")
    parser.add_argument("--repeats", type=int, default=2, help="cpu mode: alternating runs of each; best counts")
    parser.add_argument("--decoders", default="pillow",
                        help="CLIP-shapes mode: image decoders to time, comma-separated, of pillow,nvjpeg "
                             "(nvjpeg: CUDA and torchvision; the embeddings' cosine to the first is reported)")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="cpu mode: stage precisions to time (bf16 needs AVX512-BF16/AMX to pay off)")
    parser.add_argument("--model-cpu-seconds", action="store_true",
                        help="with --arch: CPU seconds an image of each model alone, EfficientNet-Lite0 beside CLIP")
    args = parser.parse_args(argv)
    if args.model_cpu_seconds:
        args.batch_size, args.arch = args.batch_size or 32, args.arch or "vit-b-32"
        print(json.dumps(model_cpu_seconds(args)))
        return 0
    gpu = args.device.startswith("cuda")
    if gpu and not args.arch:
        args.arch = ",".join(ARCHS)
    args.n_images = args.n_images or (4000 if gpu else 512)
    args.batch_size = args.batch_size or (256 if gpu else 32)
    args.workers = args.workers if args.workers is not None else (12 if gpu else 2)
    if gpu and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as scratch:
        folder = Path(scratch)
        result = run_clip_shapes(args, folder) if args.arch else run_cpu(args, folder)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
