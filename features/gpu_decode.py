"""GPU JPEG decoding for the image pass (`encoders.decoder: nvjpeg`), with a per-image CPU fallback.

The CPU decoder (`pillow`, the default) decodes, resizes and crops every photo in DataLoader
workers. With `nvjpeg` the workers only read each file's bytes and check it: they run the same
`decode_image` as the CPU decoder, but drafted to the statistics' size (`STATS_SIDE`; JPEG
decoding at 1/2..1/8 scale is several times cheaper than a full decode), which gives the image
statistics and the same bad-image accounting (missing, empty, too many pixels, not an image,
truncated) on the CPU decode. The main process then decodes the batch's JPEGs on the GPU with
torchvision's batched nvJPEG `decode_jpeg(list, device="cuda")`, resizes (shorter side, antialiased,
the preprocessing's filter) and crops them there. What nvJPEG cannot take (PNG and other formats,
found by their first bytes in the worker; CMYK, some progressive or corrupt JPEGs it rejects) is
decoded on the CPU exactly as the `pillow` decoder does, one image at a time.

Consequences, by design: GPU-resized pixels differ slightly from Pillow's, and the statistics come
from a smaller draft than the `pillow` decoder's, so the decoder is part of the image pass's cache
key (`encoders_run.image_pass_key`). torchvision is an optional extra (requirements-gpu.txt): it is
imported only here, at the point of use, and never by the CPU path, the demo or the tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from features.encoders_image import ImagePreprocess, PostImages, _worker_init, decode_image
from features.encoders_clip import EncoderLoadError
from features.image_stats import STATS_SIDE

PILLOW, NVJPEG = "pillow", "nvjpeg"
DECODERS = (PILLOW, NVJPEG)
JPEG_MAGIC = b"\xff\xd8\xff"
# what the workers need for the statistics and checks: a crop of one pixel, drafted to STATS_SIDE
_CHECK_ONLY = ImagePreprocess(resize=STATS_SIDE, crop=1, mean=(0.0,) * 3, std=(1.0,) * 3, resample="bilinear")

DecodeFn = Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]


def check_decoder(name: str, device: torch.device) -> None:
    """A clear error for a decoder this machine cannot run (never a silent switch to another one)."""
    if name not in DECODERS:
        raise EncoderLoadError(f"encoders.decoder {name!r}: expected one of {DECODERS}")
    if name == NVJPEG:
        if torch.device(device).type != "cuda" or not torch.cuda.is_available():
            raise EncoderLoadError(f"encoders.decoder nvjpeg decodes on a CUDA GPU, but the image encoder runs on "
                                   f"{device} (CUDA available: {torch.cuda.is_available()}); use "
                                   "encoders.decoder: pillow on this machine")
        nvjpeg_decode_fn()


def nvjpeg_decode_fn() -> DecodeFn:
    """torchvision's batched nvJPEG decoder, imported here only (an optional extra)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as err:  # not installed, or a build that does not match this torch
        raise EncoderLoadError(
            f"encoders.decoder nvjpeg needs torchvision built for this torch {torch.__version__} "
            f"({type(err).__name__}: {err}); install the GPU extra (pip install -r requirements-gpu.txt) "
            "or use encoders.decoder: pillow") from err

    def decode(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    return decode


# --- worker side ---------------------------------------------------------------------------
class PostFiles(Dataset):
    """Item i: (i, bytes (uint8, empty when none), CPU crop or None, ok, statistics, reason).

    A JPEG comes back as its bytes, for the GPU; any other usable file as the CPU decoder's crop.
    """

    def __init__(self, paths: list[Path | None], prep: ImagePreprocess, max_pixels: int,
                 problems: list[str] | None = None):
        self.images = PostImages(paths, prep, max_pixels, problems)  # the CPU decoder: fallback and missing files

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        path = self.images.paths[i]
        data = b""
        if path is not None:
            try:
                data = Path(path).read_bytes()
            except OSError:
                pass  # decode_image below names the reason (missing file, unreadable)
        if path is None or not data.startswith(JPEG_MAGIC):
            _, crop, ok, stats, reason = self.images[i]
            return i, torch.empty(0, dtype=torch.uint8), crop if ok else None, ok, stats, reason
        _, stats, reason = decode_image(Path(path), _CHECK_ONLY, self.images.max_pixels)
        ok = not reason
        jpeg = torch.frombuffer(bytearray(data), dtype=torch.uint8) if ok else torch.empty(0, dtype=torch.uint8)
        return i, jpeg, None, ok, torch.from_numpy(stats), reason


def _collate(items):
    idx, jpegs, crops, ok, stats, reasons = zip(*items)
    return (torch.tensor(idx), list(jpegs), list(crops), torch.tensor(ok), torch.stack(stats), list(reasons))


# --- main-process side ---------------------------------------------------------------------
def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side `side`: the CPU decoder's `_resize_shorter` rule."""
    if width <= height:
        return side, max(1, int(side * height / width))
    return max(1, int(side * width / height)), side


def resize_crop(images: list[torch.Tensor], prep: ImagePreprocess) -> torch.Tensor:
    """Decoded (3, H, W) uint8 images on any device -> (B, 3, crop, crop) uint8 on that device.

    Shorter side to `prep.resize` (antialiased, the preprocessing's filter), then the centre crop,
    padded with black when smaller, as the CPU decoder does. Images of one size share one call.
    """
    c = prep.crop
    if not images:
        return torch.zeros((0, 3, c, c), dtype=torch.uint8)
    out = torch.empty((len(images), 3, c, c), dtype=torch.uint8, device=images[0].device)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(tuple(img.shape[1:]), []).append(i)
    for (h, w), rows in by_size.items():
        x = torch.stack([images[i] for i in rows]).float()
        new_w, new_h = resized_size(w, h, prep.resize)
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode=prep.resample, antialias=True, align_corners=False)
        left, top = int((new_w - c) / 2.0), int((new_h - c) / 2.0)
        x = F.pad(x, (-left, left + c - new_w, -top, top + c - new_h))  # negative: crop, positive: black
        out[rows] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def decode_batch(jpegs: list[torch.Tensor], device: torch.device, decode: DecodeFn
                 ) -> list[torch.Tensor | None]:
    """Decode a batch of JPEG byte tensors on `device`: one batched call; if it fails, image by image,
    so that one file the decoder rejects costs only itself (None: decode it on the CPU)."""
    if not jpegs:
        return []
    try:
        return list(decode(jpegs, device))
    except Exception:  # nvJPEG rejects the batch when any one image is unsupported or corrupt
        pass
    decoded: list[torch.Tensor | None] = []
    for jpeg in jpegs:
        try:
            decoded.append(decode([jpeg], device)[0])
        except Exception:
            decoded.append(None)
    return decoded


def gpu_batch(jpegs: list[torch.Tensor], cpu_crops: list[torch.Tensor | None], ok: torch.Tensor,
              reasons: list[str], paths: list[Path | None], prep: ImagePreprocess, max_pixels: int,
              device: torch.device, decode: DecodeFn) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """One loader batch -> (crops (B, 3, crop, crop) uint8 on `device`, ok, reasons, CPU fallbacks).

    Rows with bytes go to `decode`; rows it rejects are decoded on the CPU from their file (the
    `pillow` decoder's code); a file that fails there too becomes a bad image with that reason.
    """
    ok, reasons = ok.clone(), list(reasons)
    crops = torch.zeros((len(ok), 3, prep.crop, prep.crop), dtype=torch.uint8, device=device)
    gpu_rows = [r for r in range(len(ok)) if ok[r] and jpegs[r].numel()]
    decoded = decode_batch([jpegs[r] for r in gpu_rows], device, decode)
    good = [(r, img) for r, img in zip(gpu_rows, decoded) if img is not None]
    if good:
        crops[[r for r, _ in good]] = resize_crop([img for _, img in good], prep)
    fallbacks = 0
    for r, img in zip(gpu_rows, decoded):
        if img is None:
            fallbacks += 1
            crop, _, reason = decode_image(Path(paths[r]), prep, max_pixels)
            if crop is None:
                ok[r], reasons[r] = False, reason
            else:
                cpu_crops[r] = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
    for r, crop in enumerate(cpu_crops):
        if ok[r] and crop is not None:
            crops[r] = crop.to(device, non_blocking=True)
    return crops, ok, reasons, fallbacks


def gpu_image_batches(paths: list[Path | None], batches: list[list[int]], prep: ImagePreprocess, max_pixels: int,
                      num_workers: int, device: torch.device, decode: DecodeFn | None = None, stats: dict | None = None,
                      problems: list[str] | None = None):
    """The image pass's loader for `encoders.decoder: nvjpeg`: yields what `image_loader` yields,
    (rows, crops, ok, statistics, reasons), with the crops already on `device`.

    decode: the GPU decoder (default torchvision's nvJPEG); stats["cpu_fallbacks"] counts the
    images it rejected that the CPU decoded.
    """
    decode = decode or nvjpeg_decode_fn()
    dataset = PostFiles(paths, prep, max_pixels, problems)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                        worker_init_fn=_worker_init if num_workers else None,
                        prefetch_factor=4 if num_workers else None)
    for idx, jpegs, cpu_crops, ok, image_stats, reasons in loader:
        crops, ok, reasons, fallbacks = gpu_batch(jpegs, cpu_crops, ok, reasons, [paths[i] for i in idx.tolist()],
                                                  prep, max_pixels, device, decode)
        if stats is not None:
            stats["cpu_fallbacks"] = stats.get("cpu_fallbacks", 0) + fallbacks
        yield idx, crops, ok, image_stats, reasons
