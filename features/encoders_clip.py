"""CLIP's pieces that the image and the text encoders share: loading a checkpoint (a hub id or a
local folder), its folder-safe name, its image processor class, and the errors and precision rule
of every encoder. Both encoder modules import this one; neither imports the other."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from common.io import file_digest

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


# the files of a checkpoint that decide its outputs: weights (the first format present, as transformers
# picks it), model config, image preprocessing and tokenizer; README and the like are left out
_WEIGHTS = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
_SETTINGS = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
             "merges.txt", "special_tokens_map.json")
_digests: dict = {}  # file -> (size:mtime, sha256): a checkpoint is hashed once per process while unchanged


def _checkpoint_folder(model_id: str) -> Path | None:
    """The folder of a local checkpoint, or of a hub id already downloaded to the hub cache; else None."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not downloaded (or not a hub id): keyed by its id
        return None


def checkpoint_files(folder: Path) -> list[Path]:
    weights = next((name for name in _WEIGHTS if (folder / name).is_file()), None)
    names = [weights] if weights else []
    if weights and weights.endswith(".index.json"):  # sharded weights: the index and every shard
        names += sorted(set(json.loads((folder / weights).read_text()).get("weight_map", {}).values()))
    return [folder / name for name in names + [n for n in _SETTINGS if (folder / n).is_file()]]


def clip_checkpoint_key(model_id: str) -> str:
    """What a CLIP checkpoint is in the cache keys: a digest of its files' contents when they are on this
    machine (a local folder, or a hub id in the hub cache), so a moved folder, a local copy and the hub id of
    the same weights share the cache; else `hub:<id>`."""
    folder = _checkpoint_folder(model_id)
    if folder is None:
        return f"hub:{model_id}"
    sha = hashlib.sha256()
    for path in checkpoint_files(folder):
        sha.update(f"{path.name}\t{file_digest(path, _digests)}\n".encode())
    return "sha256:" + sha.hexdigest()


def clip_encoder_name(model_id: str) -> str:
    """Folder-safe name of a CLIP checkpoint: `clip-<digest of its files>` when they are on this machine,
    else `clip-openai--clip-vit-base-patch32` (the hub id)."""
    key = clip_checkpoint_key(model_id)
    if key.startswith("sha256:"):
        return f"clip-{key[7:19]}"
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
