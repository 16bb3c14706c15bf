"""The prototype network: shapes and masks, learning, frozen backbone, switches, out-of-fold, repeatability."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from features.encoders import load_text_backbone
from tiny_clip import make_tiny_clip
from models import train_prototype as tp
from models.prototype import MASKED_LOGIT, class_text, count_parameters, select_shots, total_loss
from pipeline.config import EncoderConfig, PrototypeConfig

CPU = torch.device("cpu")
SUBS = {"Dog": "Animal", "Cat": "Animal", "Cake": "Food", "Tea": "Food", "Car": "Urban", "Bus": "Urban"}


def small_cfg(**changes) -> PrototypeConfig:
    base = dict(epochs=2, batch_size=32, width=32, shots=16, global_context=4, local_context=2, attn_heads=2,
                lr=3e-3, out_dim=8)
    return PrototypeConfig().with_fields(**{**base, **changes})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy machine's thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    folder = make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), hidden=32, projection_dim=16)
    return load_text_backbone(EncoderConfig(text="clip", clip_model=str(folder)))


def synthetic_posts(n: int, seed: int, with_label: bool = True) -> tuple[pd.DataFrame, dict]:
    """Posts whose image, text and tokens carry their subcategory (plus noise); some gaps."""
    rng = np.random.default_rng(seed)
    subs = np.array(list(SUBS))
    sub = subs[rng.integers(0, len(subs), n)]
    centers = np.random.default_rng(99)
    img_c = {s: centers.normal(size=24) for s in subs}
    txt_c = {s: centers.normal(size=16) for s in subs}
    image = np.stack([img_c[s] for s in sub]) + rng.normal(scale=1.5, size=(n, 24))
    title = np.stack([txt_c[s] for s in sub]) + rng.normal(scale=1.5, size=(n, 16))
    tags = np.stack([txt_c[s] for s in sub]) + rng.normal(scale=1.5, size=(n, 16))
    tokens = title[:, None, :] + rng.normal(scale=2.0, size=(n, 5, 16))
    mask = np.arange(5)[None, :] < rng.integers(0, 6, n)[:, None]  # some posts have no tokens
    has_image = rng.random(n) > 0.1
    image[~has_image] = 0
    posts = pd.DataFrame({
        "Pid": [f"{seed}{i}" for i in range(n)], "Uid": [f"u{i % 17}" for i in range(n)],
        "Postdate": 1_500_000_000 + rng.integers(0, 10**7, n), "Subcategory": sub,
        "Category": [SUBS[s] for s in sub], "Concept": [f"{s}-{i % 2}" for i, s in enumerate(sub)]})
    if with_label:
        posts["label"] = 5 + 0.3 * (sub == "Dog") + rng.normal(size=n)
    arrays = dict(image=image.astype(np.float16), has_image=has_image, title=title.astype(np.float16),
                  tags=tags.astype(np.float16), tokens=tokens.astype(np.float16), token_mask=mask)
    return posts, arrays


def make_split(n: int, seed: int, vocab=None, with_label=True):
    posts, arrays = synthetic_posts(n, seed, with_label)
    vocab = vocab or tp.ClassVocab.from_posts(posts)
    encoded = type("Encoded", (), arrays)()
    return posts, tp.make_data(encoded, posts, vocab), vocab


@pytest.fixture(scope="module")
def split():
    posts, data, vocab = make_split(240, 0)
    return posts, data, vocab


def randomize_residuals(attention) -> None:
    """The attention layer's residual branches start at zero (identity); give them weights."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (attention.out, attention.mlp[-1]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.3)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.3)


def build(cfg, split, backbone, rows=None):
    _, data, vocab = split
    rows = np.arange(len(data)) if rows is None else rows
    return tp.build_model(cfg, data, rows, vocab, backbone, seed=0)


# --- small parts ---------------------------------------------------------------------------
def test_class_text():
    assert class_text("Health,Fitness") == "Health Fitness"
    assert class_text("StreetArt") == "Street Art"
    assert class_text("Whether&Season") == "Whether Season"
    assert class_text("OOTD") == "OOTD"


def test_select_shots_spreads_over_users_and_caps():
    labels = np.array([0] * 50 + [1] * 3 + [-1] * 10)
    users = np.array([f"u{i % 5}" for i in range(50)] + ["a", "a", "b"] + ["z"] * 10)
    times = np.arange(len(labels))
    chosen = select_shots(labels, 3, users, times, shots=7, seed=0)
    assert len(chosen[0]) == 7 and set(labels[chosen[0]]) == {0}
    assert len(set(users[chosen[0]])) == 5  # every user before anyone's second post
    assert sorted(chosen[1]) == [50, 51, 52] and len(chosen[2]) == 0  # fewer rows than shots: all of them
    again = select_shots(labels, 3, users, times, shots=7, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(chosen, again))


def test_prototypes_come_from_training_rows_only(split, backbone):
    _, data, vocab = split
    dog = vocab.names["sub"].index("Dog")
    rows = np.flatnonzero(data.labels["sub"] != dog)
    model = build(small_cfg(hierarchical=False), split, backbone, rows)
    assert not model.sub_valid[dog] and model.sub_valid.sum() == len(SUBS) - 1
    assert torch.all(model.sub_textual[dog] == 0)
    # a class without training rows can never be predicted by the contrast head
    batch = data.batch(np.arange(8), CPU, (0.0, 1.0))
    with torch.no_grad():
        out = model(batch)
    assert torch.all(out["logits_contrast_sub"][:, dog] == MASKED_LOGIT)
    # ... and a post of that class has no contrast loss in this model (not a ~1e4 one)
    contrast = model.loss_terms(out, batch)["contrast"]
    is_dog = batch["label_sub"] == dog
    assert is_dog.any() and torch.isnan(contrast[is_dog]).all() and torch.isfinite(contrast[~is_dog]).all()


def test_shapes_and_masks(split, backbone):
    _, data, vocab = split
    cfg = small_cfg()
    model = build(cfg, split, backbone)
    rows = np.arange(20)
    batch = data.batch(rows, CPU, (0.0, 1.0))
    batch["token_mask"][0] = False  # a post with neither title nor tags
    batch["has_image"][1] = False
    with torch.no_grad():
        out = model(batch)
        terms = model.loss_terms(out, batch)
    k = len(SUBS)
    for head in ("logits_global", "logits_local", "logits_contrast_sub", "logits_sub"):
        assert out[head].shape == (20, k)
    assert out["logits_contrast_cat"].shape == (20, 3)
    assert out["logits_contrast_concept"].shape == (20, len(vocab.names["concept"]))
    for part in ("x", "v", "t"):
        assert out[part].shape == (20, cfg.model.width)
    assert out["g"].shape == out["l"].shape == (20, backbone.dim)
    assert torch.all(out["logits_local"][0] == 0) and torch.isnan(terms["local"][0])
    assert not torch.isnan(terms["local"][1:][batch["token_mask"][1:].any(-1)]).any()
    assert all(v.shape == (20,) for v in terms.values())
    assert torch.isfinite(total_loss(terms))
    # a post without an image gets the learned missing-image token, whatever its image array holds
    batch2 = {**batch, "image": batch["image"].clone()}
    batch2["image"][1] += 100
    with torch.no_grad():
        assert torch.equal(model(batch2)["x"][1], out["x"][1])


# --- learning, gradients, frozen backbone -----------------------------------------------------
def test_loss_falls_and_only_prompts_and_head_learn(split, backbone):
    _, data, vocab = split
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cfg = small_cfg(epochs=4)
    model, history = tp.train_model(cfg, data, np.arange(len(data)), vocab, backbone, 0, CPU, progress=False)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
    for name in ("global", "local", "contrast", "hierarchy"):
        assert history[-1][name] < history[0][name], (name, history)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in backbone.parameters())
    # the prompt context vectors got gradients and moved
    fresh = build(cfg, split, backbone)
    assert not torch.equal(model.global_prompts.ctx.detach(), fresh.global_prompts.ctx)
    assert not torch.equal(model.local_prompts.ctx.detach(), fresh.local_prompts.ctx)
    assert not any(k.startswith("backbone") or "text_model" in k for k in model.state_dict())


def test_prompt_vectors_receive_gradients(split, backbone):
    _, data, _ = split
    model = build(small_cfg(), split, backbone)
    batch = data.batch(np.arange(16), CPU, (0.0, 1.0))
    total_loss(model.loss_terms(model(batch), batch)).backward()
    for prompts in (model.global_prompts, model.local_prompts):
        assert prompts.ctx.grad is not None and prompts.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


class FullPromptsOnly:
    """The tiny CLIP seen through the plain backbone contract (no shared-prefix `forward_prompts`)."""

    def __init__(self, backbone):
        self.inner = backbone

    def token_embedding(self, ids):
        return self.inner.token_embedding(ids)

    def forward_embeds(self, embeds, mask):
        return self.inner.forward_embeds(embeds, mask)

    def parameters(self):
        return self.inner.parameters()


def test_shared_prefix_and_fused_prompt_passes_equal_one_full_pass_per_learner(backbone):
    """CLIP's prefix-sharing pass and the fused (GPU-style) batch give the prompts' features and the
    context vectors' gradients of plain full prompts run one learner at a time."""
    from models.prototype import PromptLearner, prompt_passes, tokenize_class_names
    names = ["Dog", "Street Art", "Health Fitness Gym", "Tea"]  # names of different token lengths
    ids, mask = tokenize_class_names(backbone.tokenizer, names)
    assert len(set(mask.sum(1).tolist())) > 1
    torch.manual_seed(0)
    learners = [PromptLearner(backbone, ids, mask, 6), PromptLearner(backbone, ids, mask, 3)]
    plain = FullPromptsOnly(backbone)
    reference = [plain.forward_embeds(*p.sequences())[0] for p in learners]
    shared = prompt_passes(learners)
    for p in learners:
        p.__dict__["backbone"] = plain
    fused, separate = prompt_passes(learners, fuse=True), prompt_passes(learners, fuse=False)
    ctx = [p.ctx for p in learners]
    want_grads = torch.autograd.grad(sum((r * r).sum() for r in reference), ctx)
    for got in (shared, fused, separate):
        assert [g.shape for g in got] == [(len(names), backbone.dim)] * 2
        for g, r in zip(got, reference):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
        for g, r in zip(torch.autograd.grad(sum((g * g).sum() for g in got), ctx), want_grads):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(separate, reference))  # the CPU default: the same passes


def test_compile_is_checked_and_eager_on_a_cpu(split, backbone):
    model = build(small_cfg(), split, backbone)
    assert tp.compiled_forward(model, "off", CPU) is model
    assert tp.compiled_forward(model, "reduce-overhead", CPU) is model  # a CPU runs eager: bit-stable
    with pytest.raises(ValueError, match="prototype.train.compile 'fast'"):
        tp.compiled_forward(model, "fast", CPU)


# --- switches ------------------------------------------------------------------------------------
def test_each_switch_removes_its_part(split, backbone):
    _, data, _ = split
    batch = data.batch(np.arange(16), CPU, (0.0, 1.0))
    full_cfg = small_cfg(aux_regression=True)
    full = build(full_cfg, split, backbone)
    with torch.no_grad():
        full_out = full(batch)
    full_terms = full.loss_terms(full_out, batch)
    assert set(full_terms) == {"global", "local", "contrast", "hierarchy", "aux"}
    n_full = count_parameters(full)

    def variant(**off):
        model = build(full_cfg.with_fields(**off), split, backbone)
        with torch.no_grad():
            out = model(batch)
        return model, out, model.loss_terms(out, batch)

    model, out, terms = variant(use_prompts_global=False)
    assert model.global_prompts is None and "global" not in terms and "logits_global" not in out and "g" not in out
    assert count_parameters(model) == n_full - full_cfg.model.global_context * backbone.width
    model, out, terms = variant(use_prompts_local=False)
    assert model.local_prompts is None and "local" not in terms and "l" not in out
    model, out, terms = variant(use_prompts_global=False, use_prompts_local=False)
    assert set(terms) == {"contrast", "hierarchy", "aux"}
    model, out, terms = variant(use_attention=False)
    assert model.attention is None and count_parameters(model) < n_full
    # without attention the post feature cannot depend on the prototypes; with it, it does
    randomize_residuals(full.attention)
    for net, depends in ((model, False), (full, True)):
        x0 = net(batch)["x"].detach()
        net.sub_textual.add_(1.0)
        x1 = net(batch)["x"].detach()
        net.sub_textual.sub_(1.0)
        assert (not torch.allclose(x0, x1)) == depends
    model, out, terms = variant(hierarchical=False)
    assert "hierarchy" not in terms and "logits_contrast_cat" not in out and not hasattr(model, "cat_visual")
    assert model.kind.shape[0] == 3 and full.kind.shape[0] == 5
    model, out, terms = variant(aux_regression=False)
    assert model.aux_head is None and "aux" not in terms and "aux" not in out


# --- out of fold, repeatability, resume -------------------------------------------------------------
def test_no_train_post_is_embedded_by_a_model_that_trained_on_it(split, backbone, monkeypatch, tmp_path):
    _, train, vocab = split
    _, test, _ = make_split(60, 1, vocab, with_label=False)
    feature_fold = np.arange(len(train)) % 3
    trained, embedded = [], []
    real_train, real_embed = tp.train_model, tp.embed

    def spy_train(cfg, data, rows, *args, **kwargs):
        model, history = real_train(cfg, data, rows, *args, **kwargs)
        model.spy_rows = set(rows.tolist())
        trained.append(model.spy_rows)
        return model, history

    def spy_embed(model, data, rows, *args, **kwargs):
        if data is train:
            embedded.append((model.spy_rows, set(rows.tolist())))
        return real_embed(model, data, rows, *args, **kwargs)

    monkeypatch.setattr(tp, "train_model", spy_train)
    monkeypatch.setattr(tp, "embed", spy_embed)
    cfg = small_cfg(epochs=1, aux_regression=True)
    train_out, test_out = tp.fit_oof(cfg, train, test, feature_fold, vocab, backbone, 0, CPU, tmp_path, "k", False)
    assert len(trained) == 3 and len(embedded) == 3
    for seen, rows in embedded:
        assert not seen & rows
    assert set().union(*(rows for _, rows in embedded)) == set(range(len(train)))
    assert not np.isnan(train_out["x"]).any() and train_out["x"].shape == (len(train), cfg.model.width)
    # test posts: the mean of the K models
    folds = [np.load(tmp_path / f"fold_{k}" / "outputs.npz") for k in range(3)]
    np.testing.assert_allclose(test_out["probs"], np.mean([f["test_probs"] for f in folds], axis=0), rtol=1e-6)
    # finished folds are reused, not retrained
    trained.clear()
    again, _ = tp.fit_oof(cfg, train, test, feature_fold, vocab, backbone, 0, CPU, tmp_path, "k", False)
    assert not trained and np.array_equal(again["x"], train_out["x"])
    # the feature tables
    posts_train, _, _ = split
    tables = tp.feature_blocks(cfg, train_out, test_out, train, test, vocab, posts_train["Pid"], np.arange(60))
    for table, n in zip(tables, (len(train), 60)):
        assert len(table) == n and table.columns[0] == "Pid" and "_pretext_loss" in table
        assert [c for c in table.columns if c.startswith("proto_pc")] == [f"proto_pc{i}" for i in range(8)]
        assert {"proto_p_sub", "proto_p_cat", "proto_entropy", "proto_aux", "proto_p_contrast_concept"} <= set(table)
    assert not tables[0].drop(columns="Pid").isna().any().any()


def test_cpu_training_is_bit_for_bit_repeatable_and_resumes(split, backbone, tmp_path):
    _, data, vocab = split
    rows = np.arange(0, len(data), 2)
    cfg = small_cfg(epochs=2)
    a, hist_a = tp.train_model(cfg, data, rows, vocab, backbone, 0, CPU, progress=False)
    b, hist_b = tp.train_model(cfg, data, rows, vocab, backbone, 0, CPU, progress=False)
    assert hist_a == hist_b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    emb_a, emb_b = tp.embed(a, data, rows, CPU), tp.embed(b, data, rows, CPU)
    assert all(np.array_equal(emb_a[k], emb_b[k], equal_nan=True) for k in emb_a)
    # interrupted after epoch 1, resumed: the same weights as the uninterrupted run
    tp.train_model(cfg.with_fields(epochs=1), data, rows, vocab, backbone, 0, CPU, tmp_path, "key", False)
    c, hist_c = tp.train_model(cfg, data, rows, vocab, backbone, 0, CPU, tmp_path, "key", False)
    assert hist_c == hist_a
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    # the checkpoint carries the arguments that rebuild its network (nanoGPT's model_args)
    from models.prototype import LossWeights, PrototypeArgs
    state = tp.read_checkpoint(tmp_path / "last.pt")
    assert PrototypeArgs(**state["model_args"]) == cfg.model and LossWeights(**state["loss_weights"]) == cfg.loss
    assert state["dims"] == {"image": data.image.shape[1], "text": data.text.shape[1]}
    # a checkpoint made under another key is not resumed
    d, hist_d = tp.train_model(cfg.with_fields(epochs=1), data, rows, vocab, backbone, 0, CPU, tmp_path,
                               "other", False)
    assert len(hist_d) == 1


def test_cross_modal_attention_equals_full_self_attention_per_post():
    """The shared-prototype computation gives what full self-attention over [x_b, P] gives per post."""
    from models.prototype import CrossModalAttention
    torch.manual_seed(0)
    b, s, d, h = 5, 7, 16, 4
    layer = CrossModalAttention(d, h)
    x, protos = torch.randn(b, d), torch.randn(s, d)
    valid = torch.tensor([True, True, False, True, True, False, True])
    x_att, p_att = layer(x, protos, valid)
    assert torch.equal(x_att, x) and torch.equal(p_att, protos[None].expand(b, -1, -1))  # starts as identity
    randomize_residuals(layer)
    x_att, p_att = layer(x, protos, valid)
    seq = torch.cat([x[:, None], protos[None].expand(b, -1, -1)], dim=1)  # (B, 1+S, d)
    q, k, v = layer.qkv(layer.norm(seq)).view(b, 1 + s, 3, h, d // h).permute(2, 0, 3, 1, 4)
    keys = torch.cat([torch.tensor([True]), valid])
    att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keys[None, None, None, :])
    full = seq + layer.out(att.transpose(1, 2).reshape(b, 1 + s, d))
    torch.testing.assert_close(p_att, full[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_att, full[:, 0] + layer.mlp(layer.mlp_norm(full[:, 0])), rtol=1e-5, atol=1e-5)
    # an invalid prototype is never attended to: changing it changes nothing else
    protos2 = protos.clone()
    protos2[2] += 5
    x2, p2 = layer(x, protos2, valid)
    torch.testing.assert_close(x2, x_att)
    torch.testing.assert_close(p2[:, valid], p_att[:, valid])


# --- the stage ----------------------------------------------------------------------------------------
def test_stage_writes_the_proto_block_and_skips_when_up_to_date(backbone, tmp_path):
    from features.encoders import IMAGE_ARRAYS, TEXT_ARRAYS, array_path, manifest_paths, pid_digest
    from models.validation import make_folds
    from pipeline.config import Config
    from common.io import read_json, read_parquet, write_json, write_npy, write_parquet
    from pipeline.prototype import STAGE
    from pipeline.run_all import run_stages
    from pipeline.catalog import RunContext

    config = Config()
    config.encoders = dataclasses.replace(config.encoders, enabled=True, text="clip", clip_model=backbone.model_id)
    config.prototype = small_cfg(epochs=1)
    config.validation = dataclasses.replace(config.validation, scheme="kfold", n_folds=2)
    ctx = RunContext(config=config, data_dir=tmp_path / "data", config_dir=tmp_path / "work", run_name="t")
    for split, n, seed in (("train", 120, 0), ("test", 40, 1)):
        posts, arrays = synthetic_posts(n, seed, with_label=split == "train")
        write_parquet(ctx.posts(split), posts)
        if split == "train":
            write_parquet(ctx.folds, make_folds(posts, "kfold", 2, 0))
        for name in IMAGE_ARRAYS + TEXT_ARRAYS:
            write_npy(array_path(ctx.encoder_cache, config.encoders, split, name), arrays[name])
        for manifest in manifest_paths(ctx.encoder_cache, config.encoders):
            info = read_json(manifest) if manifest.is_file() else {"splits": {}}
            info["splits"][split] = {"pid_digest": pid_digest(posts["Pid"])}
            write_json(manifest, info)
    run_stages(ctx, [STAGE], None, False)
    train = read_parquet(ctx.feature_block("proto", "train"))
    test = read_parquet(ctx.feature_block("proto", "test"))
    assert list(train["Pid"]) == list(read_parquet(ctx.posts("train"))["Pid"]) and len(test) == 40
    assert list(train.columns) == list(test.columns) and "_pretext_loss" in train
    networks = ctx.prototype_networks(read_json(ctx.prototype_summary)["run_key"])
    assert all((networks / f"fold_{k}" / "last.pt").is_file() for k in (0, 1))
    stamp = ctx.feature_block("proto", "train").stat().st_mtime_ns
    run_stages(ctx, [STAGE], None, False)  # up to date: skipped
    assert ctx.feature_block("proto", "train").stat().st_mtime_ns == stamp


class _Payload:
    """What a crafted checkpoint could hold: unpickling it would create `marker` (or run anything else)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_runs_no_code_and_is_named(split, backbone, tmp_path):
    """Work folders travel: a last.pt holding a pickled callable is refused by both its readers, the resume
    in training and the report's training curves, and the callable never runs."""
    from common.io import write_json, write_parquet
    from pipeline.catalog import RunContext
    from pipeline.config import Config
    from pipeline.report import prototype_history
    _, data, vocab = split
    marker = tmp_path / "payload_ran"
    ctx = RunContext(config=Config(), data_dir=tmp_path / "data", config_dir=tmp_path / "work", run_name="t")
    write_parquet(ctx.folds, pd.DataFrame({"Pid": ["1", "2"], "feature_fold": [0, 1]}))
    write_json(ctx.prototype_summary, {"run_key": "key"})  # the stage's record of its networks' folder
    fold_dir = ctx.prototype_networks("key") / "fold_0"
    fold_dir.mkdir(parents=True)
    torch.save({"key": "key", "epoch": 1, "history": [], "model": _Payload(marker)}, fold_dir / "last.pt")
    with pytest.raises(ValueError, match=r"fold_0/last.pt: not a checkpoint of this pipeline.*not loaded"):
        prototype_history(ctx)
    with pytest.raises(ValueError, match=r"fold_0/last.pt: not a checkpoint of this pipeline"):
        tp.train_model(small_cfg(epochs=1), data, np.arange(0, len(data), 2), vocab, backbone, 0, CPU, fold_dir,
                       "key", False)
    assert not marker.exists()
    # the same file loaded the unsafe way does run the payload: the test would catch a regression
    torch.load(fold_dir / "last.pt", weights_only=False)
    assert marker.exists()


def test_paper_stack_gives_the_network_projected_parts_without_pca(split, backbone, tmp_path):
    posts_train, train, vocab = split
    _, test, _ = make_split(40, 1, vocab, with_label=False)
    cfg = small_cfg(epochs=1, stack="paper")
    feature_fold = np.arange(len(train)) % 2
    train_out, test_out = tp.fit_oof(cfg, train, test, feature_fold, vocab, backbone, 0, CPU, tmp_path, "k", False)
    tables = tp.feature_blocks(cfg, train_out, test_out, train, test, vocab, posts_train["Pid"], np.arange(40))
    parts = [p for p in tp.PAPER_PARTS if f"paper_{p}" in train_out]
    assert parts[:5] == ["image", "text", "x", "v", "t"]  # g, l: only with the prompt learners on
    for table in tables:
        assert not [c for c in table if c.startswith("proto_pc")]
        assert [c for c in table if c.startswith("proto_x")] == [f"proto_x{j}" for j in range(cfg.model.width)]
        assert {"proto_image0", "proto_text0", "proto_v0", "proto_t0", "proto_p_sub"} <= set(table)
    # x~ is the same output the pca stack reduces, not reduced
    np.testing.assert_array_equal(tables[0][[f"proto_x{j}" for j in range(cfg.model.width)]].to_numpy(),
                                  train_out["x"].astype(np.float32))
    with pytest.raises(ValueError, match="prototype.stack"):
        tp.feature_blocks(small_cfg(stack="umap"), train_out, test_out, train, test, vocab, posts_train["Pid"],
                          np.arange(40))
