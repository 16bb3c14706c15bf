"""Training loop and out-of-fold embeddings of the prototype network (method.md, stages B-C).

`fit_oof` trains one `PrototypeNet` per fold k of `feature_fold` on the train posts
outside fold k (prototypes from those rows only), embeds the posts of fold k with
it, and embeds the test posts with every model (their mean is taken), so that no
train post is embedded by a model that saw it. `feature_blocks` turns the result
into the `proto` feature tables. Plain PyTorch: AdamW, per-epoch atomic checkpoints
(resumed after an interruption), mixed precision on GPU, bit-for-bit repeatable on CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from common.io import UnreadableFile, atomic_path, file_digest, read_json, write_json
from common.pca import PCA
from models.prototype import (LEVEL_COLUMNS, LevelPrototypes, PrototypeNet, build_prototypes, entropy,
                              pretext_loss, tokenize_class_names, total_loss)



@dataclass
class PrototypeTraining:
    """How the networks are trained (config `prototype.train`): epochs, batch size, AdamW's learning
    rate and weight decay, the posts per class that make its prototypes (`shots`), the device, and
    torch.compile of the training forward on CUDA (off | default | reduce-overhead | max-autotune;
    a CPU always runs eager: compiling costs more than it saves there, and eager is bit-stable)."""
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-5
    shots: int = 256
    device: str = "auto"
    compile: str = "off"

log = logging.getLogger(__name__)

EMBED_PARTS = ("g", "l", "x", "v", "t")  # network outputs reduced into proto_pc_* (prototype.stack: pca)
PAPER_PARTS = ("image", "text", "x", "v", "t", "g", "l")  # prototype.stack: paper, PrototypeNet.projected_parts
STACKS = ("pca", "paper")


# --- inputs ---------------------------------------------------------------------------
@dataclass
class ClassVocab:
    """Class names per level (from the train posts) and the category of each subcategory."""
    names: dict[str, list[str]]
    sub_to_cat: np.ndarray

    @classmethod
    def from_posts(cls, posts: pd.DataFrame) -> "ClassVocab":
        names = {lv: sorted(posts[col].astype(str).unique()) for lv, col in LEVEL_COLUMNS.items()}
        cat_index = {c: i for i, c in enumerate(names["cat"])}
        # a subcategory's category: the most frequent one (SMPD has exactly one)
        pairs = posts.groupby([LEVEL_COLUMNS["sub"], LEVEL_COLUMNS["cat"]]).size().reset_index(name="n")
        pairs = pairs.sort_values(["n", LEVEL_COLUMNS["cat"]], ascending=[False, True], kind="stable")
        first = pairs.drop_duplicates(LEVEL_COLUMNS["sub"]).set_index(LEVEL_COLUMNS["sub"])[LEVEL_COLUMNS["cat"]]
        sub_to_cat = np.array([cat_index[first[s]] for s in names["sub"]], dtype=np.int64)
        return cls(names=names, sub_to_cat=sub_to_cat)

    def encode(self, posts: pd.DataFrame) -> dict[str, np.ndarray]:
        """Class index per level; -1 for a class the train posts never show (test-only)."""
        out = {}
        for level, col in LEVEL_COLUMNS.items():
            index = {name: i for i, name in enumerate(self.names[level])}
            out[level] = np.array([index.get(str(v), -1) for v in posts[col]], dtype=np.int64)
        return out


@dataclass
class ProtoData:
    """Everything the network reads per post, rows in posts-table order."""
    image: np.ndarray       # (N, Di)
    has_image: np.ndarray   # (N,) bool
    text: np.ndarray        # (N, Dt) pooled post text: mean of the normalised title and tags vectors
    tokens: np.ndarray      # (N, T, Dt)
    token_mask: np.ndarray  # (N, T) bool
    labels: dict[str, np.ndarray]  # level -> (N,) class index, -1 unknown
    users: np.ndarray       # (N,) user ids
    times: np.ndarray       # (N,) post time
    target: np.ndarray      # (N,) popularity, NaN where unknown (test)

    def __len__(self) -> int:
        return len(self.has_image)

    def batch(self, rows: np.ndarray, device: torch.device, target_stats: tuple[float, float]) -> dict:
        pin = device.type == "cuda"

        def t(a):
            # on CUDA: a pinned copy goes over without blocking the host (no sync per step); the
            # float16 arrays travel as float16 and are widened on the device
            host = torch.from_numpy(np.ascontiguousarray(a[rows]))
            return host.pin_memory().to(device, non_blocking=True) if pin else host
        mean, std = target_stats
        batch = {"image": t(self.image).float(), "has_image": t(self.has_image), "text": t(self.text).float(),
                 "tokens": t(self.tokens).float(), "token_mask": t(self.token_mask),
                 "target": ((t(self.target).float() - mean) / std)}
        for level, labels in self.labels.items():
            batch[f"label_{level}"] = t(labels)
        return batch


def post_text(title: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """A post's pooled text feature h: the mean of its L2-normalised title and tag vectors."""
    def unit(a):
        a = np.asarray(a, dtype=np.float32)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)
    return (unit(title) + unit(tags)) / 2


def make_data(encoded, posts: pd.DataFrame, vocab: ClassVocab) -> ProtoData:
    """ProtoData from an EncodedSplit (features/encoders.py) and the posts table of one split."""
    n = len(posts)
    if len(encoded.image) != n:
        raise ValueError(f"encoded features have {len(encoded.image)} rows, the posts table {n}")
    target = posts["label"].to_numpy(np.float32) if "label" in posts else np.full(n, np.nan, np.float32)
    return ProtoData(image=encoded.image, has_image=np.asarray(encoded.has_image, bool),
                     text=post_text(encoded.title, encoded.tags), tokens=encoded.tokens,
                     token_mask=np.asarray(encoded.token_mask, bool), labels=vocab.encode(posts),
                     users=posts["Uid"].astype(str).to_numpy(), times=posts["Postdate"].to_numpy(np.int64),
                     target=target)


class NothingToLearn(ValueError):
    """The train posts hold nothing the network could learn from (the `proto` block is skipped)."""


def check_learnable(train: ProtoData, vocab: ClassVocab) -> None:
    """Raise NothingToLearn when the pretext task is void: fewer than two subcategories to tell
    apart (every loss is 0 whatever the weights), or no image and one text for every post."""
    if len(vocab.names["sub"]) < 2:
        raise NothingToLearn(f"the train posts have {len(vocab.names['sub'])} subcategory; "
                             "the pretext task needs at least 2 to tell apart")
    no_text = len(train) == 0 or not np.ptp(np.asarray(train.text, dtype=np.float32), axis=0).any()
    if not train.has_image.any() and no_text:
        raise NothingToLearn("no train post has a usable image and every post text is the same (all empty?)")


# --- one model --------------------------------------------------------------------------

@contextlib.contextmanager
def deterministic(device: torch.device):
    """Deterministic kernels on CPU (bit-for-bit repeatable runs); GPU runs are only seeded.

    Deterministic mode also fills every new tensor with NaN by default, a debugging aid that cost
    about an eighth of a training step here (aten::fill_ on every activation of the frozen text
    backbone); no kernel reads memory before writing it, so switching the fill off changes no result.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def level_prototypes(data: ProtoData, rows: np.ndarray, vocab: ClassVocab, levels: list[str], shots: int,
                     seed: int) -> dict[str, LevelPrototypes]:
    """Visual and textual prototypes of each level from the given (training) rows only."""
    usable = np.zeros(len(data), dtype=bool)
    usable[rows] = True
    out = {}
    for level in levels:
        k = len(vocab.names[level])
        labels = data.labels[level]
        # a class whose training posts all lack images keeps a zero visual prototype
        visual, _ = build_prototypes(data.image, usable & data.has_image, labels, k, data.users, data.times,
                                     shots, seed)
        textual, valid = build_prototypes(data.text, usable, labels, k, data.users, data.times, shots, seed)
        out[level] = LevelPrototypes(torch.from_numpy(visual), torch.from_numpy(textual), torch.from_numpy(valid))
    return out


def build_model(cfg, data: ProtoData, rows: np.ndarray, vocab: ClassVocab, backbone, seed: int) -> PrototypeNet:
    """A fresh network with prototypes from `rows`; initial weights depend on `seed` only.

    cfg: the prototype config (its parts `model`: PrototypeArgs, `loss`: LossWeights, `train`:
    PrototypeTraining), as for every function here that takes one.

    Every fold's model starts from the same weights (same seed), so the learned
    coordinates of x~, V~, T~ stay comparable across the K out-of-fold models.
    """
    args = cfg.model
    levels = ["sub"] + (["cat", "concept"] if args.hierarchical else [])
    protos = level_prototypes(data, rows, vocab, levels, cfg.train.shots, seed)
    name_ids = name_mask = None
    if args.use_prompts_global or args.use_prompts_local:
        name_ids, name_mask = tokenize_class_names(backbone.tokenizer, vocab.names["sub"])
    torch.manual_seed(seed)
    return PrototypeNet(args, cfg.loss, data.image.shape[1], data.text.shape[1], protos, backbone, name_ids, name_mask,
                        torch.from_numpy(vocab.sub_to_cat))


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def compiled_forward(model: PrototypeNet, mode: str, device: torch.device):
    """The network's training forward, through torch.compile when `prototype.train.compile` asks for it on CUDA."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"prototype.train.compile {mode!r}: expected one of {COMPILE_MODES}")
    if mode == "off" or device.type != "cuda":
        if mode != "off":
            log.info("prototype.train.compile %s applies on CUDA only; running eager on %s", mode, device)
        return model
    return torch.compile(model, mode=None if mode == "default" else mode, dynamic=False)


def target_stats(data: ProtoData, rows: np.ndarray) -> tuple[float, float]:
    """Mean and std of the popularity over the training rows (the auxiliary head's scale)."""
    y = data.target[rows]
    y = y[np.isfinite(y)]
    if len(y) < 2:
        return 0.0, 1.0
    return float(y.mean()), float(max(y.std(), 1e-6))


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that is damaged (truncated, overwritten), as opposed to one that holds code."""


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint this pipeline wrote (tensors and plain values only), loaded without running any code.

    Work folders travel between machines and teams: `weights_only` refuses the pickled objects
    (callables, classes) that could run code when loaded.
    """
    import pickle
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError) as err:  # truncated or overwritten: not a zip archive torch can read
        raise UnreadableCheckpoint(f"cannot read {path} ({_first_line(err)})") from None
    except (pickle.UnpicklingError, AttributeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a checkpoint of this pipeline (it may hold only tensors and plain values; "
                         f"{first_line}); it was not loaded. Delete it, or rerun the prototype stage "
                         "(python pipeline/run_all.py --stages prototype --force)") from None


def train_model(cfg, data: ProtoData, rows: np.ndarray, vocab: ClassVocab, backbone, seed: int,
                device: torch.device, ckpt_dir: Path | None = None, key: str = "", progress: bool = True,
                max_steps: int | None = None, bar=None) -> tuple[PrototypeNet, list[dict]]:
    """Train one network on `rows`; checkpoint after each epoch; resume from the last one.

    ckpt_dir: where `last.pt` goes (atomic); a checkpoint written under another `key`
    (other config or inputs) is ignored. max_steps: stop after that many steps in all
    (benchmarks). bar: a progress bar shared by several networks (fit_oof), advanced by one
    per batch; without one, `progress` shows a bar per epoch. Returns the model (eval mode)
    and the per-epoch mean losses.
    """
    if backbone is not None and hasattr(backbone, "to"):
        backbone.to(device)
    model = build_model(cfg, data, rows, vocab, backbone, seed).to(device)
    train = cfg.train
    forward = compiled_forward(model, train.compile, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    stats = target_stats(data, rows)
    history: list[dict] = []
    start_epoch = 0
    ckpt = Path(ckpt_dir) / "last.pt" if ckpt_dir is not None else None
    state = {}
    if ckpt is not None and ckpt.is_file():
        try:
            state = read_checkpoint(ckpt, device)
        except UnreadableCheckpoint as err:  # a damaged file is trained again; one holding code stays an error
            log.warning("%s; training the network again from its first epoch", err)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, history = state["epoch"], state["history"]
            log.info("resuming %s after epoch %d", ckpt_dir, start_epoch)
    if bar is not None:
        bar.update(start_epoch * -(-len(rows) // train.batch_size))  # the epochs a resumed run skips
    steps = 0
    with deterministic(device):
        for epoch in range(start_epoch, train.epochs):
            model.train()
            order = np.random.default_rng([seed, epoch]).permutation(rows)
            # running sums stay on the device (float64, as Python floats would be): one host sync an epoch
            sums: dict[str, torch.Tensor] = {}
            n_batches = 0
            batches = range(0, len(order), train.batch_size)
            if bar is None:
                batches = tqdm(batches, desc=f"epoch {epoch + 1}/{train.epochs}", leave=False, disable=not progress)
            for start in batches:
                batch = data.batch(order[start:start + train.batch_size], device, stats)
                with autocast(device):
                    out = forward(batch)
                    terms = model.loss_terms(out, batch)
                    loss = total_loss(terms)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n_batches += 1
                with torch.no_grad():
                    for name, value in [("loss", loss), *((n, torch.nanmean(v.float())) for n, v in terms.items())]:
                        value = value.detach().double()
                        sums[name] = sums[name] + value if name in sums else value
                steps += 1
                if bar is not None:
                    bar.update(1)
                if max_steps is not None and steps >= max_steps:
                    break
            history.append({"epoch": epoch + 1,
                            **{k: float(v.item()) / max(n_batches, 1) for k, v in sums.items()}})
            if max_steps is not None and steps >= max_steps:
                break
            if ckpt is not None:
                with atomic_path(ckpt) as tmp:
                    torch.save({"key": key, "epoch": epoch + 1, "history": history, "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(), "model_args": dataclasses.asdict(cfg.model),
                                "loss_weights": dataclasses.asdict(cfg.loss),
                                "dims": {"image": int(data.image.shape[1]), "text": int(data.text.shape[1])}}, tmp)
    model.eval()
    model.target_stats = stats
    return model, history


@torch.inference_mode()
def embed(model: PrototypeNet, data: ProtoData, rows: np.ndarray, device: torch.device,
          batch_size: int = 512, prompts: dict[str, torch.Tensor] | None = None,
          paper_parts: bool = False) -> dict[str, np.ndarray]:
    """Per-post outputs of a trained network: the parts of F, class probabilities and pretext loss;
    with paper_parts (prototype.stack: paper) also the network-projected parts `paper_*`.

    prompts: the frozen network's `prompt_features()`, when the caller embeds several sets of
    posts with one network (the class prompts do not depend on the posts); computed when None.
    """
    model.eval()
    stats = getattr(model, "target_stats", (0.0, 1.0))
    collected: dict[str, list[np.ndarray]] = {}
    with deterministic(device):
        if prompts is None:
            prompts = model.prompt_features()
        for start in range(0, len(rows), batch_size):
            batch = data.batch(rows[start:start + batch_size], device, stats)
            with autocast(device):
                out = model(batch, prompts)
                terms = model.loss_terms(out, batch)
            probs = torch.softmax(out["logits_sub"].float(), dim=-1)
            result = {name: out[name].float() for name in EMBED_PARTS if name in out}
            if paper_parts:
                result.update({f"paper_{name}": v.float() for name, v in model.projected_parts(batch, out).items()})
            result["probs"] = probs
            for head in ("global", "local", "contrast_sub", "contrast_cat", "contrast_concept"):
                if f"logits_{head}" in out:
                    result[f"probs_{head}"] = torch.softmax(out[f"logits_{head}"].float(), dim=-1)
            if "aux" in out:
                result["aux"] = out["aux"].float() * stats[1] + stats[0]
            result["pretext_loss"] = pretext_loss(terms).float()
            for name, value in result.items():
                collected.setdefault(name, []).append(value.cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}


# --- out of fold ------------------------------------------------------------------------
def fit_oof(cfg, train: ProtoData, test: ProtoData, feature_fold: np.ndarray, vocab: ClassVocab, backbone,
            seed: int, device: torch.device, work_dir: Path | None = None, key: str = "",
            progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """K models on the K folds of `feature_fold`; each train post is embedded by the model that
    did not train on it, each test post by the mean of the K models.

    work_dir: per fold `fold_<k>/last.pt` (training checkpoint) and `fold_<k>/outputs.npz`
    (its embeddings; a finished fold is not redone). Returns (train outputs, test outputs).
    """
    feature_fold = np.asarray(feature_fold)
    if len(feature_fold) != len(train):
        raise ValueError(f"feature_fold has {len(feature_fold)} rows, the train posts {len(train)}")
    folds = sorted(int(f) for f in np.unique(feature_fold))
    if len(folds) < 2 or folds[0] < 0:
        raise ValueError(f"feature_fold must hold at least two folds 0..K-1, got {folds}")
    train_out: dict[str, np.ndarray] = {}
    test_sum: dict[str, np.ndarray] = {}
    # one bar for the whole stage: folds x epochs x batches (a finished fold counts as done)
    fold_steps = {k: cfg.train.epochs * -(-int((feature_fold != k).sum()) // cfg.train.batch_size) for k in folds}
    bar = tqdm(total=sum(fold_steps.values()), unit="batch", disable=not progress,
               desc=f"prototype network: {len(folds)} folds x {cfg.train.epochs} epochs")
    last_loss: dict[int, float] = {}
    # a frozen network's embedding is one forward per batch: on a GPU few large batches keep it busy
    # (on a CPU the batch size is kept: it sets the order of float sums, hence the bits)
    embed_batch = 4096 if device.type == "cuda" else 512
    for k in folds:
        fold_dir = Path(work_dir) / f"fold_{k}" if work_dir is not None else None
        held_out = np.flatnonzero(feature_fold == k)
        outputs = _load_fold_outputs(fold_dir, key)
        if outputs is not None:
            bar.update(fold_steps[k])
        else:
            bar.set_postfix_str(f"fold {k}")
            model, history = train_model(cfg, train, np.flatnonzero(feature_fold != k), vocab, backbone, seed, device,
                                         fold_dir, key, progress, bar=bar)
            if history:
                last_loss[k] = history[-1]["loss"]
                bar.set_postfix_str(f"fold {k} done, loss {last_loss[k]:.3f}")
            with torch.inference_mode(), deterministic(device):
                prompts = model.prompt_features()  # one pass of the class prompts for all posts
            outputs = {f"oof_{n}": v for n, v in embed(model, train, held_out, device, embed_batch, prompts,
                                                              cfg.stack == "paper").items()}
            outputs.update({f"test_{n}": v for n, v in
                            embed(model, test, np.arange(len(test)), device, embed_batch, prompts,
                                  cfg.stack == "paper").items()})
            _save_fold_outputs(fold_dir, key, outputs)
        for name, value in outputs.items():
            part, name = name.split("_", 1)
            if part == "oof":
                if name not in train_out:
                    train_out[name] = np.full((len(train),) + value.shape[1:], np.nan, dtype=np.float32)
                train_out[name][held_out] = value
            else:
                test_sum[name] = test_sum.get(name, 0) + value.astype(np.float64)
    bar.close()
    log.info("prototype network: %d of %d folds trained in this run%s%s", len(last_loss), len(folds),
             " (the others were finished before)" if len(last_loss) < len(folds) else "",
             "; last-epoch loss " + ", ".join(f"fold {k} {v:.3f}" for k, v in last_loss.items()) if last_loss else "")
    test_out = {name: (value / len(folds)).astype(np.float32) for name, value in test_sum.items()}
    return train_out, test_out


def _load_fold_outputs(fold_dir: Path | None, key: str) -> dict[str, np.ndarray] | None:
    """A finished fold's embeddings, or None: none yet, another run key, or a file that does not
    match the digest written with it (named in one warning; the fold is then embedded again)."""
    if fold_dir is None or not (fold_dir / "outputs.npz").is_file() or not (fold_dir / "outputs.json").is_file():
        return None
    npz_path, record_path = fold_dir / "outputs.npz", fold_dir / "outputs.json"
    try:
        record = read_json(record_path)
    except UnreadableFile as err:
        log.warning("%s; rebuilding the fold's outputs", err)
        return None
    if not isinstance(record, dict):
        log.warning("cannot read %s (not a JSON object); rebuilding the fold's outputs", record_path)
        return None
    if record.get("key") != key:
        return None
    try:
        if record.get("sha256") != file_digest(npz_path, {}):
            raise ValueError("its content does not match the digest in outputs.json")
        with np.load(npz_path) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        log.warning("cannot read %s (%s); rebuilding the fold's outputs", npz_path, _first_line(err))
        return None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _save_fold_outputs(fold_dir: Path | None, key: str, outputs: dict[str, np.ndarray]) -> None:
    if fold_dir is None:
        return
    with atomic_path(fold_dir / "outputs.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **outputs)
    # the digest is checked before the file is reused: a damaged file is rebuilt, never used
    write_json(fold_dir / "outputs.json", {"key": key, "sha256": file_digest(fold_dir / "outputs.npz", {})})


# --- feature tables ----------------------------------------------------------------------
def _stack_parts(outputs: dict[str, np.ndarray]) -> np.ndarray:
    parts = []
    for name in EMBED_PARTS:
        if name in outputs:
            a = outputs[name].astype(np.float64)
            parts.append(a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8))
    return np.concatenate(parts, axis=1)


def _summaries(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], vocab: ClassVocab,
               prob_features: str) -> dict[str, np.ndarray]:
    """Class-probability columns: own-class probability per head and level, top-1, entropy."""
    def own(probs, y):
        value = probs[np.arange(len(y)), np.clip(y, 0, None)]
        return np.where(y >= 0, value, np.nan)
    cols = {}
    probs = outputs["probs"]
    cols["p_sub"] = own(probs, labels["sub"])
    cat_probs = np.zeros((len(probs), len(vocab.names["cat"])))
    np.add.at(cat_probs.T, vocab.sub_to_cat, probs.T)
    cols["p_cat"] = own(cat_probs, labels["cat"])
    for head, level in (("global", "sub"), ("local", "sub"), ("contrast_sub", "sub"), ("contrast_cat", "cat"),
                        ("contrast_concept", "concept")):
        if f"probs_{head}" in outputs:
            cols[f"p_{head}"] = own(outputs[f"probs_{head}"], labels[level])
    cols["top1"] = probs.max(axis=1)
    cols["entropy"] = entropy(torch.from_numpy(probs.astype(np.float64))).numpy()
    if "aux" in outputs:
        cols["aux"] = outputs["aux"]
    if prob_features == "full":
        for i in range(probs.shape[1]):
            cols[f"prob_{i}"] = probs[:, i]
    elif prob_features != "summary":
        raise ValueError(f"prototype.prob_features must be 'summary' or 'full', got {prob_features!r}")
    return cols


def _paper_columns(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """proto_<part><j>: the network-projected parts of PAPER_PARTS, as they are (no PCA)."""
    cols = {}
    for name in PAPER_PARTS:
        if f"paper_{name}" in outputs:
            part = outputs[f"paper_{name}"]
            cols.update({f"proto_{name}{j}": part[:, j] for j in range(part.shape[1])})
    return cols


def feature_blocks(cfg, train_out: dict[str, np.ndarray], test_out: dict[str, np.ndarray],
                   train: ProtoData, test: ProtoData, vocab: ClassVocab, train_pids, test_pids
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `proto` feature tables: Pid, proto_pc_* (F reduced by PCA fit on the train OOF rows; with
    `prototype.stack: paper` instead the network-projected parts, `_paper_columns`), class-probability
    summaries, and `_pretext_loss` (not a model feature)."""
    if cfg.stack not in STACKS:
        raise ValueError(f"prototype.stack must be one of {STACKS}, got {cfg.stack!r}")
    train_wide, test_wide = _stack_parts(train_out), _stack_parts(test_out)
    pca = PCA(min(cfg.out_dim, train_wide.shape[1])).fit(train_wide)
    tables = []
    for pids, out, wide, data in ((train_pids, train_out, train_wide, train), (test_pids, test_out, test_wide, test)):
        table = {"Pid": np.asarray(pids)}
        if cfg.stack == "paper":
            table.update({k: v.astype(np.float32) for k, v in _paper_columns(out).items()})
        else:
            reduced = pca.transform(wide)
            for i in range(reduced.shape[1]):
                table[f"proto_pc{i}"] = reduced[:, i].astype(np.float32)
        for name, value in _summaries(out, data.labels, vocab, cfg.prob_features).items():
            table[f"proto_{name}"] = np.asarray(value, dtype=np.float32)
        table["_pretext_loss"] = out["pretext_loss"].astype(np.float32)
        tables.append(pd.DataFrame(table))
    return tables[0], tables[1]
