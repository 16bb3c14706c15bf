"""The GPU decode path's CPU side: worker checks, per-image fallback, resize and crop, config errors.

No GPU and no torchvision here: the functions take the device and the decoder as arguments, so they
run on the CPU with Pillow standing in for nvJPEG (it rejects CMYK JPEGs, as nvJPEG may).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from features import gpu_decode as gd
from features.encoders_image import ImagePreprocess, PostImages, decode_image
from features.encoders_run import image_pass_key
from features.encoders_clip import EncoderLoadError
from pipeline.config import EncoderConfig
from tests.test_encoders import BAD, GOOD, MAX_PIXELS, _write_image

CPU = torch.device("cpu")
PREP = ImagePreprocess(resize=64, crop=56, mean=(0.5,) * 3, std=(0.25,) * 3, resample="bicubic")


def pillow_as_nvjpeg(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """A batched JPEG decoder with nvJPEG's contract: RGB (3, H, W) uint8 on `device`; the whole
    call fails when one image is unsupported (here: CMYK)."""
    out = []
    for jpeg in jpegs:
        img = Image.open(io.BytesIO(jpeg.numpy().tobytes()))
        if img.mode == "CMYK":
            raise RuntimeError("unsupported JPEG colour space")
        out.append(torch.from_numpy(np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()).to(device))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path | None]:
    root = tmp_path_factory.mktemp("gpu_decode_images")
    rng = np.random.default_rng(0)
    paths: dict[str, Path | None] = {}
    for kind in GOOD + list(BAD):
        if kind == "unlisted":
            paths[kind] = None
            continue
        path = root / f"{kind}.img"
        if kind != "gone":
            _write_image(path, kind, rng)
        paths[kind] = path
    return paths


def problems(paths) -> list[str]:
    """The reader's reason for each path it did not list (features.smpd.image_path_problem)."""
    return ["no image path listed" if p is None else "" for p in paths]


def loader_rows(paths, decode=pillow_as_nvjpeg, batch=5):
    batches = [list(range(i, min(i + batch, len(paths)))) for i in range(0, len(paths), batch)]
    counts: dict = {}
    rows = list(gd.gpu_image_batches(paths, batches, PREP, MAX_PIXELS, 0, CPU, decode, counts, problems(paths)))
    idx = torch.cat([r[0] for r in rows])
    crops, ok, stats = (torch.cat([r[i] for r in rows]) for i in (1, 2, 3))
    reasons = [x for r in rows for x in r[4]]
    return idx, crops, ok, stats, reasons, counts


def test_same_bad_image_accounting_as_the_cpu_decoder(files):
    paths = list(files.values())
    idx, crops, ok, stats, reasons, counts = loader_rows(paths)
    assert idx.tolist() == list(range(len(paths)))
    cpu = [PostImages(paths, PREP, MAX_PIXELS, problems(paths))[i] for i in range(len(paths))]
    assert ok.tolist() == [item[2] for item in cpu]
    assert [r.split(" (")[0] for r in reasons] == [item[4].split(" (")[0] for item in cpu]
    kinds = list(files)
    assert all(ok[kinds.index(k)] for k in GOOD)
    for kind, reason in BAD.items():
        assert not ok[kinds.index(kind)] and reasons[kinds.index(kind)].startswith(reason)
        assert torch.all(crops[kinds.index(kind)] == 0)
    # statistics come from the CPU decode: present exactly for usable images
    assert torch.isfinite(stats[ok]).all() and torch.isnan(stats[~ok]).all()
    assert counts["cpu_fallbacks"] == 1  # the CMYK JPEG, rejected by the GPU-style decoder


def test_rejected_and_non_jpeg_images_get_the_cpu_decoders_crop_exactly(files):
    kinds = ["jpeg", "cmyk_jpeg", "gray_png", "palette_gif"]
    _, crops, ok, _, _, _ = loader_rows([files[k] for k in kinds])
    assert ok.all()
    for i, kind in enumerate(kinds[1:], start=1):  # CPU-decoded: bit for bit the pillow decoder's crop
        crop, _, _ = decode_image(files[kind], PREP, MAX_PIXELS)
        assert torch.equal(crops[i], torch.from_numpy(crop.transpose(2, 0, 1).copy())), kind


def test_gpu_resize_and_crop_is_close_to_pillows(files):
    """The same photo through the GPU path's resize and crop (here on the CPU) and through Pillow."""
    for kind in ("jpeg", "small_jpeg"):  # a downscale, and an upscale of a 20x12 photo (black-padded crop)
        img = Image.open(files[kind]).convert("RGB")
        decoded = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())
        ours = gd.resize_crop([decoded], PREP)[0].float()
        pil_crop, _, _ = decode_image(files[kind], PREP, MAX_PIXELS)
        theirs = torch.from_numpy(pil_crop.transpose(2, 0, 1).copy()).float()
        assert ours.shape == theirs.shape == (3, PREP.crop, PREP.crop)
        assert (ours - theirs).abs().mean() < 4.0, kind  # of 255: filters differ in detail, not in content
    # a smaller-than-crop image keeps the CPU decoder's black border
    tiny = torch.full((3, 10, 10), 200, dtype=torch.uint8)
    wide = ImagePreprocess(resize=10, crop=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = gd.resize_crop([tiny], wide)[0]
    assert out[:, 3:13, 3:13].eq(200).all() and out[:, :3].eq(0).all() and out[:, :, 13:].eq(0).all()


def test_a_failing_batch_falls_back_image_by_image():
    calls = []

    def fussy(jpegs, device):
        calls.append(len(jpegs))
        if any(j[0] == 1 for j in jpegs):
            raise RuntimeError("rejected")
        return [torch.zeros(3, 2, 2, dtype=torch.uint8) for _ in jpegs]
    jpegs = [torch.tensor([0, 9], dtype=torch.uint8), torch.tensor([1, 9], dtype=torch.uint8),
             torch.tensor([0, 8], dtype=torch.uint8)]
    decoded = gd.decode_batch(jpegs, CPU, fussy)
    assert calls == [3, 1, 1, 1] and decoded[1] is None and decoded[0] is not None and decoded[2] is not None
    assert gd.decode_batch([], CPU, fussy) == []


def test_decoder_config_errors_are_clear():
    with pytest.raises(EncoderLoadError, match="expected one of"):
        gd.check_decoder("turbo", CPU)
    with pytest.raises(EncoderLoadError, match="decodes on a CUDA GPU.*decoder: pillow"):
        gd.check_decoder("nvjpeg", CPU)
    gd.check_decoder("pillow", CPU)
    try:
        import torchvision.io  # noqa: F401
    except Exception:
        with pytest.raises(EncoderLoadError, match="requirements-gpu.txt"):
            gd.nvjpeg_decode_fn()


def test_the_decoder_is_in_the_image_cache_key():
    pillow, nvjpeg = EncoderConfig(), EncoderConfig(decoder="nvjpeg")
    assert image_pass_key(pillow, "d") != image_pass_key(nvjpeg, "d")
    assert image_pass_key(pillow, "d") == image_pass_key(EncoderConfig(decoder="pillow"), "d")
