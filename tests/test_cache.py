"""The encoder cache checks what it holds: a damaged array or manifest is named and built again."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
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
    return data_dir, {"train": make_split(data_dir, "train", GOOD + list(BAD)[:2] + GOOD, seed=1),
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


# --- caches that survive a retry (issue 21 item 4) ---------------------------------------------------
@pytest.fixture
def counted_texts(monkeypatch):
    """Texts that reach the text model, counted."""
    from features.encoders_text import BackboneTextEncoder
    calls = []
    for method in ("sentences", "words"):
        real = getattr(BackboneTextEncoder, method)
        monkeypatch.setattr(BackboneTextEncoder, method,
                            lambda self, texts, *a, _real=real: calls.append(len(texts)) or _real(self, texts, *a))
    return calls


def test_a_batch_size_change_encodes_nothing_again(tmp_path, posts, tiny_clip, reference, counted, counted_texts):
    from pipeline.config import Config
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    encode(ctx)
    counted.clear(), counted_texts.clear()
    retry = make_ctx(tmp_path, posts, **clip_settings(tiny_clip), batch_size=3, text_group_tokens=96, num_workers=1)
    encode(retry)
    assert counted == [] and counted_texts == []
    for name, array in reference.items():
        assert np.array_equal(arrays(retry)[name], array), name
    smaller = Config()
    smaller.encoders.batch_size, smaller.encoders.text_group_tokens = 8, 512
    # the config folder and every stage key stay: no later stage reruns either
    assert smaller.work_digest() == Config().work_digest()
    assert smaller.digest("encoders") == Config().digest("encoders")


def test_chunks_of_another_batch_size_join_after_a_crash(tmp_path, posts, tiny_clip, reference, counted,
                                                          monkeypatch):
    """Killed after two batches of 4 (say, out of GPU memory), rerun with batch size 3: the 8 images done are
    kept, the rest is encoded in batches of 3, and the arrays hold every image."""
    from features.encoders_image import ImageEncoder
    from pipeline.encode import encode_posts
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    counting = ImageEncoder.embed

    def crash_third(self, crops):
        if len(counted) == 2:
            raise KeyboardInterrupt("out of memory")
        return counting(self, crops)

    monkeypatch.setattr(ImageEncoder, "embed", crash_third)
    with pytest.raises(KeyboardInterrupt):
        encode_posts(ctx, progress=False)
    monkeypatch.setattr(ImageEncoder, "embed", counting)
    counted.clear()
    retry = make_ctx(tmp_path, posts, **clip_settings(tiny_clip), batch_size=3)
    assert encode_posts(retry, progress=False)
    # train rows 8-15 hold 7 usable images (row 8 is a bad one), test 4; rows 0-7 come from the chunks of 4
    assert sum(counted) == 7 + 4
    for name in ("train_has_image.npy", "test_image.npy", "test_has_image.npy"):
        assert np.array_equal(arrays(retry)[name], reference[name]), name
    assert np.allclose(arrays(retry)["train_image.npy"], reference["train_image.npy"], atol=1e-2)


def test_shards_of_other_batch_sizes_merge(tmp_path, posts, tiny_clip, reference, counted):
    from features.encoders_run import copy_chunks
    from pipeline.encode import encode_posts
    ctx0 = make_ctx(tmp_path / "a", posts, **clip_settings(tiny_clip), batch_size=4)
    ctx1 = make_ctx(tmp_path / "b", posts, **clip_settings(tiny_clip), batch_size=2)
    assert not encode_posts(ctx0, "0/2", progress=False)
    assert not encode_posts(ctx1, "1/2", progress=False)
    assert copy_chunks([ctx1.encoder_cache], ctx0.encoder_cache) > 0
    shards = sum(counted)
    counted.clear()
    assert encode_posts(ctx0, progress=False)
    # shard 0 did train rows 0-3 and 8-11 (batches of 4), shard 1 rows 2-3, 6-7, 10-11, 14-15 (batches of 2):
    # the merge encodes only rows 4-5 and 12-13, which neither shard did (test: all done by the two)
    assert sum(counted) == 4 < shards
    assert np.array_equal(arrays(ctx0)["train_has_image.npy"], reference["train_has_image.npy"])
    assert np.allclose(arrays(ctx0)["train_image.npy"], reference["train_image.npy"], atol=1e-2)


def test_a_moved_checkpoint_encodes_nothing_again(tmp_path, posts, tiny_clip, counted, counted_texts):
    import shutil
    ctx = make_ctx(tmp_path / "work", posts, **clip_settings(tiny_clip))
    encode(ctx)
    moved = shutil.copytree(tiny_clip, tmp_path / "elsewhere" / "my-clip")
    counted.clear(), counted_texts.clear()
    again = make_ctx(tmp_path / "work", posts, image="clip", text="clip", clip_model=str(moved))
    assert encoder_folder(again.config.encoders, "image") == encoder_folder(ctx.config.encoders, "image")
    encode(again)
    assert counted == [] and counted_texts == []


def test_a_hub_id_and_a_local_copy_of_its_files_share_the_cache(tmp_path, tiny_clip, monkeypatch):
    import shutil
    from huggingface_hub import constants
    from pipeline.config import EncoderConfig
    snapshot = tmp_path / "hub" / "models--tiny--clip" / "snapshots" / "abc123"
    shutil.copytree(tiny_clip, snapshot)
    (tmp_path / "hub" / "models--tiny--clip" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny--clip" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub, local = (EncoderConfig(image="clip", text="clip", clip_model=m) for m in ("tiny/clip", str(tiny_clip)))
    assert encoder_folder(hub, "image") == encoder_folder(local, "image")
    assert encoder_folder(hub, "text") == encoder_folder(local, "text")


# --- each image read once (issue 23 item 5) ----------------------------------------------------------
def test_a_fresh_run_reads_each_image_file_once(tmp_path, posts, tiny_clip, reference, monkeypatch):
    """The decoder hashes the bytes it decodes: no second read to key the cache; the arrays are unchanged."""
    import builtins
    import collections
    import io
    data_dir = posts[0].resolve()
    opened = collections.Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
            path = Path(file).resolve()
            if data_dir in path.parents:
                opened[path] += 1
        return real_open(file, *args, **kwargs)

    for module in (builtins, io):  # pathlib and Pillow open files through one or the other
        monkeypatch.setattr(module, "open", counting_open)
    ctx = make_ctx(tmp_path, posts, **clip_settings(tiny_clip))
    encode(ctx)
    for module in (builtins, io):
        monkeypatch.setattr(module, "open", real_open)
    assert opened and set(opened.values()) == {1}, opened
    for name, array in reference.items():
        assert np.array_equal(arrays(ctx)[name], array), name
    files = pd.read_parquet(encoder_dir(ctx.encoder_cache, encoder_folder(ctx.config.encoders, "image"))
                            / "train_image_files.parquet")
    path = posts[0] / files["path"][0]
    assert files["sha256"][0] == hashlib.sha256(path.read_bytes()).hexdigest()
