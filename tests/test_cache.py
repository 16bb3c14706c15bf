"""The encoder cache checks what it holds: a damaged array or manifest is named and built again."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from features.encoders import array_path, encoder_dir, encoder_folder, load_encoded, output_paths
from test_encoders import BAD, GOOD, clip_settings, make_ctx, make_split
from tiny_clip import make_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def posts(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("smpd")
    return data_dir, {"train": make_split(data_dir, "train", GOOD + list(BAD)[:2], seed=1),
                      "test": make_split(data_dir, "test", GOOD[:4], seed=2)}


def arrays(ctx) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in output_paths(ctx.encoder_cache, ctx.config.encoders) if p.suffix == ".npy"}


def encode(ctx, force=False) -> None:
    from pipeline.encode import STAGE
    from pipeline.run_all import run_stages
    run_stages(ctx, [STAGE], None, force=force)


@pytest.fixture
def counted(monkeypatch):
    """Images that reach the image model, counted."""
    from features.encoders_image import ImageEncoder
    calls, real = [], ImageEncoder.embed
    monkeypatch.setattr(ImageEncoder, "embed", lambda self, crops: calls.append(len(crops)) or real(self, crops))
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory, posts, tiny_clip):
    ctx = make_ctx(tmp_path_factory.mktemp("ref"), posts, **clip_settings(tiny_clip))
    encode(ctx)
    return arrays(ctx)


def warnings_naming(caplog, path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def test_garbage_bytes_in_the_image_array_are_found_and_built_again(tmp_path, posts, tiny_clip, reference,
                                                                     counted, caplog):
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    encode(ctx)
    target = array_path(ctx.encoder_cache, ctx.config.encoders, "train", "image")
    data = bytearray(target.read_bytes())
    data[-40:-24] = bytes(range(16))  # 16 bytes of garbage, same size
    target.write_bytes(bytes(data))
    counted.clear()
    with caplog.at_level(logging.WARNING, logger="smp"):
        encode(ctx)
    assert len(warnings_naming(caplog, target)) == 1 and "damaged" in warnings_naming(caplog, target)[0]
    assert counted  # built again, not trusted
    for name, array in reference.items():
        assert np.array_equal(arrays(ctx)[name], array), name


def test_a_truncated_image_array_is_built_again_by_a_plain_rerun(tmp_path, posts, tiny_clip, reference, caplog):
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    encode(ctx)
    target = array_path(ctx.encoder_cache, ctx.config.encoders, "train", "image")
    target.write_bytes(target.read_bytes()[:target.stat().st_size // 2])
    with pytest.raises(ValueError, match=str(target)):  # a reader names the file, never a raw mmap error
        load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    with caplog.at_level(logging.WARNING, logger="smp"):
        encode(ctx)
    assert any("truncated" in m for m in warnings_naming(caplog, target))
    assert len(load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")) == len(posts[1]["train"])
    for name, array in reference.items():
        assert np.array_equal(arrays(ctx)[name], array), name


def test_a_truncated_manifest_is_named_and_built_again(tmp_path, posts, tiny_clip, reference, caplog):
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    encode(ctx)
    manifest = encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image")) / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    with caplog.at_level(logging.WARNING, logger="smp"):
        encode(ctx)
    assert len(warnings_naming(caplog, manifest)) == 1
    load_encoded(ctx.encoder_cache, ctx.config.encoders, "train")
    for name, array in reference.items():
        assert np.array_equal(arrays(ctx)[name], array), name


def test_force_encodes_again(tmp_path, posts, tiny_clip, counted):
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    encode(ctx)
    counted.clear()
    encode(ctx)
    assert counted == []  # up to date
    encode(ctx, force=True)
    assert sum(counted) == sum(len(p) for p in posts[1].values()) - 2  # every usable image (2 bad in train)
