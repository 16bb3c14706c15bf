"""A tiny CLIP built from a config and saved to disk: the real transformers CLIP code path, offline."""
from __future__ import annotations

from pathlib import Path

import torch

from features.encoders_clip import clip_image_processor_class


def make_tiny_clip(folder: str | Path, seed: int = 0, image_size: int = 32, patch_size: int = 8,
                   hidden: int = 32, projection_dim: int = 16, layers: int = 2) -> Path:
    """Save a small random CLIP (model, character-level tokenizer, image processor) to `folder`,
    laid out like a hub checkpoint, for tests and benchmarks that must run without the hub."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=40, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **common),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    clip_image_processor_class()(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
