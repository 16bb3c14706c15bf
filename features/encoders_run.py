"""The batched, resumable, shardable run that turns posts into encoder arrays.

Image rows are cut into chunks of `batch_size` posts; texts into groups of
distinct strings (`TextPlan`). Each chunk's or group's outputs are written
atomically to its own file as soon as its batch is done; a rerun skips the
chunks whose file exists, so an interrupted run resumes where it stopped and,
since every chunk is computed from the same rows in the same batch, ends with
the same arrays as an uninterrupted one. With `shard=(i, n)` a process encodes
only chunks j with j % n == i; the chunk files of all shards are then joined
(`copy_chunks` when the shards had separate work folders) and one ordinary run
finds nothing left to encode and concatenates them into the final arrays.

Two passes per split, keyed separately so that changing one encoder leaves the
other's arrays alone: the image pass (decode in DataLoader workers, image
statistics, image embedding) and the text pass (title, tags, token features).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.encoders import (
    CLIP, encoder_dir, encoders_root, image_encoder_name, pid_digest, text_encoder_name,
)
from features.encoders_image import PostImages, image_loader
from features.encoders_text import length_groups
from features.image_stats import COLUMNS as IMGSTATS_COLUMNS
from pipeline.io import atomic_path, read_json, write_json

log = logging.getLogger("smp")

# bump when a change of code changes the arrays, so old chunks are not reused
FORMAT_VERSION = 1
MAX_NAMED_BAD = 20  # bad images named in the log (all of them go to {split}_bad_images.json)


@dataclass
class SplitInputs:
    """What the encoders need from a posts table, in its row order."""
    pids: list[str]
    image_paths: list[Path | None]  # None: no image file (img_exists False)
    titles: list[str]
    tags: list[str]
    mediatypes: list[str] = field(default_factory=list)

    @classmethod
    def from_posts(cls, posts: pd.DataFrame, data_dir: Path) -> "SplitInputs":
        exists = posts["img_exists"].fillna(False).astype(bool).tolist()
        paths = [Path(data_dir) / p if ok and isinstance(p, str) and p else None
                 for p, ok in zip(posts["img_path"].tolist(), exists)]
        # video posts: SMPD lists the video's thumbnail image as img_path; it is used like a photo
        return cls(pids=posts["Pid"].astype(str).tolist(), image_paths=paths,
                   titles=posts["Title"].fillna("").astype(str).tolist(),
                   tags=posts["Alltags"].fillna("").astype(str).tolist(),
                   mediatypes=posts["Mediatype"].fillna("").astype(str).tolist()
                   if "Mediatype" in posts else [])

    def __len__(self) -> int:
        return len(self.pids)

    def token_texts(self) -> list[str]:
        return [f"{t} {g}".strip() for t, g in zip(self.titles, self.tags)]


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """'i/n' -> (i, n); empty -> (0, 1)."""
    if not shard:
        return 0, 1
    if isinstance(shard, tuple):
        i, n = shard
    else:
        try:
            i, n = (int(x) for x in str(shard).split("/"))
        except ValueError:
            raise ValueError(f"shard {shard!r}: expected i/n, e.g. 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return i, n


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def image_pass_key(enc_cfg, pids_digest: str) -> str:
    return _key({"v": FORMAT_VERSION, "image": enc_cfg.image, "clip": enc_cfg.clip_model if enc_cfg.image == CLIP else "",
                 "rows": enc_cfg.batch_size, "max_pixels": enc_cfg.max_image_pixels,
                 "resolution": enc_cfg.image_resolution, "precision": enc_cfg.precision, "pids": pids_digest})


def text_pass_key(enc_cfg, pids_digest: str, texts_digest: str) -> str:
    # v2: texts grouped by length over the whole split (v1: within chunks of batch_size posts)
    return _key({"v": FORMAT_VERSION, "text_v": 2, "text": enc_cfg.text,
                 "clip": enc_cfg.clip_model if enc_cfg.text == CLIP else "",
                 "tokens": enc_cfg.max_text_tokens, "length": enc_cfg.max_text_length,
                 "group_tokens": enc_cfg.text_group_tokens, "precision": enc_cfg.precision,
                 "pids": pids_digest, "texts": texts_digest})


# --- chunk files ------------------------------------------------------------------------------
def _chunks(n: int, rows: int) -> list[range]:
    return [range(start, min(start + rows, n)) for start in range(0, n, rows)]


def _chunk_path(chunk_dir: Path, j: int) -> Path:
    return chunk_dir / f"{j:06d}.npz"


def _save_chunk(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append .npz to a name
            np.savez(handle, **arrays)


def _pending(chunk_dir: Path, n_chunks: int, shard: tuple[int, int]) -> list[int]:
    i, n = shard
    return [j for j in range(n_chunks) if j % n == i and not _chunk_path(chunk_dir, j).exists()]


def _concatenate(chunk_dir: Path, n_chunks: int, targets: dict[str, Path]) -> dict[str, np.ndarray]:
    """Join chunk arrays into .npy files (written through a memory map, atomically). Returns small extras."""
    with np.load(_chunk_path(chunk_dir, 0)) as first:
        specs = {name: (first[name].dtype, first[name].shape[1:]) for name in first.files}
    n_rows = 0
    for j in range(n_chunks):
        with np.load(_chunk_path(chunk_dir, j)) as chunk:
            n_rows += len(chunk[next(iter(specs))])
    extras = {}
    for name, (dtype, tail) in specs.items():
        if name not in targets:
            extras[name] = np.concatenate([np.load(_chunk_path(chunk_dir, j))[name] for j in range(n_chunks)])
            continue
        with atomic_path(targets[name]) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, *tail))
            row = 0
            for j in range(n_chunks):
                with np.load(_chunk_path(chunk_dir, j)) as chunk:
                    part = chunk[name]
                out[row:row + len(part)] = part
                row += len(part)
            out.flush()
            del out
    return extras


# --- the passes -------------------------------------------------------------------------------
@dataclass
class PassResult:
    kind: str
    done: bool          # final arrays written (False: a shard run, or chunks of other shards missing)
    encoded: int        # chunks encoded by this call
    missing: int = 0    # chunks still missing (other shards)
    info: dict = field(default_factory=dict)


def _up_to_date(manifest: dict, split: str, kind: str, key: str, paths: list[Path]) -> bool:
    entry = manifest.get("splits", {}).get(split, {}).get(kind, {})
    return entry.get("key") == key and all(p.exists() for p in paths)


def image_pass(inputs: SplitInputs, split: str, enc_cfg, work_dir: Path, get_encoder, shard=(0, 1),
               progress: bool = True) -> PassResult:
    """Image embeddings, has_image flags and image statistics of one split."""
    name = image_encoder_name(enc_cfg)
    out_dir = encoder_dir(work_dir, name)
    pids_digest = pid_digest(inputs.pids)
    key = image_pass_key(enc_cfg, pids_digest)
    targets = {"image": out_dir / f"{split}_image.npy", "has_image": out_dir / f"{split}_has_image.npy",
               "imgstats": out_dir / f"{split}_imgstats.npy"}
    bad_file = out_dir / f"{split}_bad_images.json"
    manifest = read_manifest(out_dir)
    if _up_to_date(manifest, split, "image", key, [*targets.values(), bad_file]):
        log.info("[encode] %s images (%s): up to date", split, name)
        return PassResult("image", True, 0, info=manifest["splits"][split]["image"])
    chunk_dir = out_dir / "_chunks" / f"{split}-image-{key}"
    chunks = _chunks(len(inputs), enc_cfg.batch_size)
    pending = _pending(chunk_dir, len(chunks), parse_shard(shard))
    encoder = None
    if pending:
        encoder = get_encoder()
        dataset = PostImages(inputs.image_paths, encoder.prep, enc_cfg.max_image_pixels)
        loader = image_loader(dataset, [list(chunks[j]) for j in pending], enc_cfg.num_workers,
                              pin_memory=encoder.device.type == "cuda")
        for idx, crops, ok, stats, reasons in tqdm(loader, total=len(pending), disable=not progress,
                                                   desc=f"encode {split} images ({name})", unit="batch"):
            ok = ok.numpy().astype(bool)
            embedding = np.zeros((len(idx), encoder.dim), np.float16)
            if ok.all():
                embedding[:] = encoder.embed(crops)
            elif ok.any():
                embedding[ok] = encoder.embed(crops[ok])
            _save_chunk(_chunk_path(chunk_dir, int(idx[0]) // enc_cfg.batch_size), image=embedding,
                        has_image=ok, imgstats=stats.numpy().astype(np.float32),
                        reason=np.array(reasons, dtype=str), precision=np.array([encoder.precision] * len(idx)))
    missing = len(_pending(chunk_dir, len(chunks), (0, 1)))
    if missing or parse_shard(shard)[1] > 1:
        return PassResult("image", False, len(pending), missing)
    extras = _concatenate(chunk_dir, len(chunks), targets)
    reasons = extras["reason"]
    bad = [{"row": int(r), "Pid": inputs.pids[r], "path": str(inputs.image_paths[r] or ""), "reason": str(reasons[r])}
           for r in np.flatnonzero(reasons != "")]
    write_json(bad_file, bad)
    counts = Counter(_reason_kind(b["reason"]) for b in bad)
    if bad:
        named = ", ".join(f"{b['Pid']} ({b['reason']})" for b in bad[:MAX_NAMED_BAD])
        log.warning("[encode] %s: %d of %d posts have no usable image %s: %s%s; full list in %s", split, len(bad),
                    len(inputs), dict(counts), named, " ..." if len(bad) > MAX_NAMED_BAD else "", bad_file)
    n_video = sum(m == "video" for m in inputs.mediatypes)
    described = (encoder or get_encoder()).describe()
    info = {"key": key, "pid_digest": pids_digest, **described,
            "precision": sorted(set(extras["precision"].tolist())) or [described["precision"]],
            "shapes": {"image": [len(inputs), described["dim"]], "has_image": [len(inputs)],
                       "imgstats": [len(inputs), len(IMGSTATS_COLUMNS)]},
            "imgstats_columns": list(IMGSTATS_COLUMNS), "n_has_image": int(len(inputs) - len(bad)),
            "bad_images": dict(counts), "n_video_posts": n_video, "chunk_rows": enc_cfg.batch_size}
    update_manifest(out_dir, split, "image", info, len(inputs))
    _remove_chunks(chunk_dir)
    return PassResult("image", True, len(pending), info=info)


def _remove_chunks(chunk_dir: Path) -> None:
    shutil.rmtree(chunk_dir, ignore_errors=True)
    try:
        chunk_dir.parent.rmdir()  # `_chunks` itself, once no other pass has chunks in it
    except OSError:
        pass


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0]


@dataclass
class TextPlan:
    """The text pass of one split as groups of distinct strings.

    Titles and tag strings are both pooled sentences, so they are encoded as one
    set of distinct strings; token texts (title + " " + tags, first
    `max_text_tokens` tokens) are a second set. Each set is sorted by token count
    over the whole split and cut into groups (`length_groups`): the same string
    anywhere in the split (empty titles, a user's repeated tag string) runs once,
    and a group pads to almost nothing. A group is one chunk file; groups depend
    only on the split's strings, so resumed and sharded runs batch alike.
    """
    sentences: list[str]               # distinct titles and tag strings
    token_texts: list[str]             # distinct token texts
    sentence_groups: list[list[int]]   # indices into `sentences`
    token_groups: list[list[int]]      # indices into `token_texts`
    title_index: np.ndarray            # (N,) row -> index into `sentences`
    tags_index: np.ndarray
    token_index: np.ndarray            # (N,) row -> index into `token_texts`

    @classmethod
    def make(cls, inputs: SplitInputs, encoder, max_tokens: int, tokens_per_group: int) -> "TextPlan":
        sentences = list(dict.fromkeys(inputs.titles + inputs.tags))
        token_rows = inputs.token_texts()
        token_texts = list(dict.fromkeys(token_rows))
        where = {text: i for i, text in enumerate(sentences)}
        where_token = {text: i for i, text in enumerate(token_texts)}
        return cls(sentences, token_texts,
                   length_groups(encoder.lengths(sentences), tokens_per_group),
                   length_groups(encoder.lengths(token_texts, max_tokens), tokens_per_group),
                   np.array([where[t] for t in inputs.titles], np.int64),
                   np.array([where[t] for t in inputs.tags], np.int64),
                   np.array([where_token[t] for t in token_rows], np.int64))

    @property
    def n_groups(self) -> int:
        return len(self.sentence_groups) + len(self.token_groups)


def _encode_text_group(plan: TextPlan, j: int, encoder, max_tokens: int) -> dict[str, np.ndarray]:
    if j < len(plan.sentence_groups):
        texts = [plan.sentences[i] for i in plan.sentence_groups[j]]
        return {"pooled": encoder.sentences(texts).astype(np.float16)}
    texts = [plan.token_texts[i] for i in plan.token_groups[j - len(plan.sentence_groups)]]
    words, mask = encoder.words(texts, max_tokens)
    tokens = np.zeros((len(texts), max_tokens, encoder.dim), np.float16)
    token_mask = np.zeros((len(texts), max_tokens), bool)
    tokens[:, :words.shape[1]] = words[:, :max_tokens]
    token_mask[:, :mask.shape[1]] = mask[:, :max_tokens]
    return {"tokens": tokens, "token_mask": token_mask}


def _write_rows(target: Path, row_index: np.ndarray, groups: list[list[int]], load_group, dtype, tail: tuple):
    """Array of one output, row r = the encoded distinct string row_index[r], written group by group through
    a memory map (atomically), so that only one group's outputs are in memory at a time."""
    n_distinct = sum(len(g) for g in groups)
    group_of, position = np.zeros(n_distinct, np.int64), np.zeros(n_distinct, np.int64)
    for j, group in enumerate(groups):
        group_of[group] = j
        position[group] = np.arange(len(group))
    row_group = group_of[row_index]
    rows_by_group = np.argsort(row_group, kind="stable")
    bounds = np.searchsorted(row_group[rows_by_group], np.arange(len(groups) + 1))
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(row_index), *tail))
        for j in range(len(groups)):
            rows = rows_by_group[bounds[j]:bounds[j + 1]]
            if len(rows):
                out[rows] = load_group(j)[position[row_index[rows]]]
        out.flush()
        del out


def text_pass(inputs: SplitInputs, split: str, enc_cfg, work_dir: Path, get_encoder, shard=(0, 1),
              progress: bool = True) -> PassResult:
    """Title and tag-string embeddings, and token features of title + " " + tags (see `TextPlan`)."""
    name = text_encoder_name(enc_cfg)
    out_dir = encoder_dir(work_dir, name)
    pids_digest = pid_digest(inputs.pids)
    targets = {a: out_dir / f"{split}_{a}.npy" for a in ("title", "tags", "tokens", "token_mask")}
    length = enc_cfg.max_text_tokens
    # the strings are part of the key: a changed title is never joined from an old chunk file
    texts_digest = hashlib.sha256("\x00".join(inputs.titles + ["\x01"] + inputs.tags).encode()).hexdigest()[:16]
    key = text_pass_key(enc_cfg, pids_digest, texts_digest)
    manifest = read_manifest(out_dir)
    if _up_to_date(manifest, split, "text", key, list(targets.values())):
        log.info("[encode] %s texts (%s): up to date", split, name)
        return PassResult("text", True, 0, info=manifest["splits"][split]["text"])
    encoder = get_encoder()
    plan = TextPlan.make(inputs, encoder, length, getattr(encoder, "tokens_per_group", 1024))
    chunk_dir = out_dir / "_chunks" / f"{split}-text-{key}"
    pending = _pending(chunk_dir, plan.n_groups, parse_shard(shard))
    sizes = [len(g) for g in plan.sentence_groups + plan.token_groups]
    log.info("[encode] %s texts (%s): %d posts -> %d distinct titles and tag strings, %d distinct token texts, "
             "%d groups", split, name, len(inputs), len(plan.sentences), len(plan.token_texts), plan.n_groups)
    with tqdm(total=sum(sizes[j] for j in pending), disable=not progress, unit="text",
              desc=f"encode {split} texts ({name})") as bar:
        for j in pending:
            _save_chunk(_chunk_path(chunk_dir, j), **_encode_text_group(plan, j, encoder, length))
            bar.update(sizes[j])
    missing = len(_pending(chunk_dir, plan.n_groups, (0, 1)))
    if missing or parse_shard(shard)[1] > 1:
        return PassResult("text", False, len(pending), missing)
    dim = encoder.dim

    def loader(offset: int, array: str):
        def load(j: int) -> np.ndarray:
            with np.load(_chunk_path(chunk_dir, j + offset)) as chunk:
                return chunk[array]
        return load

    n_sentence_groups = len(plan.sentence_groups)
    for array, index in (("title", plan.title_index), ("tags", plan.tags_index)):
        _write_rows(targets[array], index, plan.sentence_groups, loader(0, "pooled"), np.float16, (dim,))
    _write_rows(targets["tokens"], plan.token_index, plan.token_groups, loader(n_sentence_groups, "tokens"),
                np.float16, (length, dim))
    _write_rows(targets["token_mask"], plan.token_index, plan.token_groups,
                loader(n_sentence_groups, "token_mask"), bool, (length,))
    described = encoder.describe()
    info = {"key": key, "pid_digest": pids_digest, **described, "max_text_tokens": length,
            "tokens_text": "title + ' ' + tags, truncated to max_text_tokens (special tokens included)",
            "shapes": {"title": [len(inputs), dim], "tags": [len(inputs), dim],
                       "tokens": [len(inputs), length, dim], "token_mask": [len(inputs), length]},
            "n_empty_title": sum(not t.strip() for t in inputs.titles),
            "n_empty_tags": sum(not t.strip() for t in inputs.tags),
            "n_distinct_sentences": len(plan.sentences), "n_distinct_token_texts": len(plan.token_texts)}
    update_manifest(out_dir, split, "text", info, len(inputs))
    _remove_chunks(chunk_dir)
    return PassResult("text", True, len(pending), info=info)


# --- manifest -----------------------------------------------------------------------------
def read_manifest(out_dir: Path) -> dict:
    path = out_dir / "manifest.json"
    return read_json(path) if path.is_file() else {}


def update_manifest(out_dir: Path, split: str, kind: str, info: dict, n_rows: int) -> None:
    manifest = read_manifest(out_dir)
    manifest.update({"encoder": out_dir.name, "dtype": "float16", "row_order": "posts table row order"})
    entry = manifest.setdefault("splits", {}).setdefault(split, {})
    if entry.get("pid_digest") not in (None, info["pid_digest"]):
        entry.pop("image" if kind == "text" else "text", None)  # made from another posts table: stale
    entry.update({"n": n_rows, "pid_digest": info["pid_digest"], kind: info})
    write_json(out_dir / "manifest.json", manifest)


def copy_chunks(sources: list[Path], work_dir: Path) -> int:
    """Copy finished chunk files of shard runs that used other work folders into `work_dir`."""
    copied = 0
    for source in sources:
        root = encoders_root(source)
        for path in sorted(root.glob("*/_chunks/*/*.npz")):
            target = encoders_root(work_dir) / path.relative_to(root)
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
                copied += 1
    return copied
