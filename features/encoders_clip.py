"""CLIP's pieces that the image and the text encoders share: loading a checkpoint (a hub id or a
local folder), its folder-safe name, its image processor class, and the errors and precision rule
of every encoder. Both encoder modules import this one; neither imports the other."""
from __future__ import annotations

import re
from pathlib import Path

import torch

CLIP = "clip"
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto": bf16 autocast on CUDA, float32 elsewhere. bf16 on a CPU pays off only where the CPU has
    bf16 instructions (AVX512-BF16, AMX); it stays deterministic."""
    if precision not in PRECISIONS:
        raise ValueError(f"encoders.precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


class EncoderLoadError(RuntimeError):
    """An encoder named by the config cannot be loaded (never silently replaced by another)."""


def clip_load_error(model_id: str, err: Exception) -> EncoderLoadError:
    return EncoderLoadError(
        f"cannot load CLIP model {model_id!r}: {type(err).__name__}: {err}\n"
        "The config asks for CLIP (encoders.image/encoders.text = clip); no offline encoder is used instead. "
        "On a machine without the model hub, download the checkpoint elsewhere "
        f"(e.g. `huggingface-cli download {model_id} --local-dir /models/clip`), copy the folder here and "
        "point the config at it: encoders.clip_model: /models/clip (or --set encoders.clip_model=/models/clip)."
    )


def clip_encoder_name(model_id: str) -> str:
    """Folder-safe name of a CLIP checkpoint: `clip-openai--clip-vit-base-patch32` or `clip-<folder>-<hash>`."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        import hashlib
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        return f"clip-{_slug(path.resolve().name)}-{digest}"
    return "clip-" + _slug(model_id.replace("/", "--"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def quiet_transformers() -> None:
    """No transformers progress bar while a checkpoint loads: a stage shows one bar of its own."""
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()


def load_clip_model(model_id: str):
    """`CLIPModel.from_pretrained(model_id)` in eval mode, or a clear error (never a fallback)."""
    from transformers import CLIPModel
    quiet_transformers()
    try:
        model = CLIPModel.from_pretrained(model_id)
    except Exception as err:  # hub unreachable, wrong id, missing files
        raise clip_load_error(model_id, err) from err
    return model.eval().requires_grad_(False)


def clip_image_processor_class():
    """The PIL-backed CLIP image processor (transformers >= 5.2x name), else the classic one."""
    try:
        from transformers import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor
