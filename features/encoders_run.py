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

The image pass is keyed by the content of what it reads: a sha256 per image file
(`{split}_image_files.parquet` keeps them, with size and modification time as a
pre-check that saves rehashing an unchanged file on the same machine). A chunk's
file name carries the digest of its files, so a chunk whose file changed is
encoded again and only that one; the other rows are copied from the finished
arrays, which therefore equal a fresh run's. Digests do not depend on the
machine, so shards of other machines merge (`copy_chunks`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from common.io import atomic_path, read_json, write_json
from common.written import written_problem, written_record
from features.encoders import (
    encoder_dir, encoder_folder, image_encoder_name, image_settings, pid_digest,
    text_encoder_name, text_settings,
)
from features.encoders_image import MISSING_FILE, PostImages, image_loader
from features.encoders_text import length_groups
from features.image_stats import COLUMNS as IMGSTATS_COLUMNS
from features.smpd import data_image_path, image_path_problem

log = logging.getLogger("smp")

# bump when a change of code changes the arrays, so old chunks are not reused
FORMAT_VERSION = 3


@dataclass
class SplitInputs:
    """What the encoders need from a posts table, in its row order."""
    pids: list[str]
    image_paths: list[Path | None]  # None: not to be opened (no path listed, or one outside the data folder)
    titles: list[str]
    tags: list[str]
    mediatypes: list[str] = field(default_factory=list)
    image_problems: list[str] = field(default_factory=list)  # why a path is None ("" otherwise)
    listed_paths: list[str] = field(default_factory=list)    # the paths as listed, for the bad-image list

    @classmethod
    def from_posts(cls, posts: pd.DataFrame, data_dir: Path) -> "SplitInputs":
        # every listed path inside the data folder is tried (a file added since read_data counts); the reader's
        # rule decides which may be opened at all
        listed = ["" if not isinstance(p, str) else p for p in posts["img_path"].tolist()]
        # video posts: SMPD lists the video's thumbnail image as img_path; it is used like a photo
        return cls(pids=posts["Pid"].astype(str).tolist(), image_paths=[data_image_path(data_dir, p) for p in listed],
                   titles=posts["Title"].fillna("").astype(str).tolist(),
                   tags=posts["Alltags"].fillna("").astype(str).tolist(),
                   mediatypes=posts["Mediatype"].fillna("").astype(str).tolist()
                   if "Mediatype" in posts else [],
                   image_problems=[image_path_problem(p) for p in listed], listed_paths=listed)

    def __post_init__(self) -> None:
        if not self.listed_paths:  # built from paths directly (benchmarks, tests)
            self.listed_paths = [str(p or "") for p in self.image_paths]
        if not self.image_problems:
            self.image_problems = [""] * len(self.image_paths)

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
    return _key({"v": FORMAT_VERSION, **image_settings(enc_cfg), "pids": pids_digest})


def text_pass_key(enc_cfg, pids_digest: str, texts_digest: str) -> str:
    # text_v 2: texts grouped by length over the whole split (1: within chunks of batch_size posts)
    return _key({"v": FORMAT_VERSION, "text_v": 2, **text_settings(enc_cfg), "pids": pids_digest,
                 "texts": texts_digest})


# --- chunk files ------------------------------------------------------------------------------
def _chunks(n: int, rows: int) -> list[range]:
    return [range(start, min(start + rows, n)) for start in range(0, n, rows)]


def _chunk_path(chunk_dir: Path, j: int, content: str = "", stop: int | None = None) -> Path:
    """Chunk j's file (text groups), or the file of image rows [j, stop) with `content`, the digest of the
    files it read: rows in the name, so that chunks of any batch size (other runs, shards) join."""
    if stop is not None:
        return chunk_dir / f"{j:09d}-{stop:09d}-{content}.npz"
    return chunk_dir / (f"{j:06d}-{content}.npz" if content else f"{j:06d}.npz")


def _chunk_rows(path: Path) -> tuple[int, int, str] | None:
    """(start, stop, content) of an image chunk file's name; None for another file."""
    parts = path.stem.split("-")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()) or int(parts[0]) >= int(parts[1]):
        return None
    return int(parts[0]), int(parts[1]), parts[2]


def _uncovered(chunks: list[range], covered: np.ndarray) -> list[range]:
    """The runs of rows of each chunk that nothing covers yet: what is left to encode, batch by batch."""
    left = []
    for rows in chunks:
        free = np.flatnonzero(~covered[rows.start:rows.stop]) + rows.start
        if len(free):
            left += [range(int(run[0]), int(run[-1]) + 1) for run in np.split(free, np.flatnonzero(np.diff(free) != 1) + 1)]
    return left


def _usable_chunk(path: Path) -> bool:
    """A chunk file reads back whole (the zip's CRC of each array checked); a damaged one is named and removed."""
    try:
        with np.load(path) as chunk:
            for name in chunk.files:
                chunk[name]
        return True
    except Exception as err:  # noqa: BLE001 - any damage means: encode these rows again
        log.warning("[encode] %s: unreadable (%s); its rows are encoded again", path, type(err).__name__)
        path.unlink(missing_ok=True)
        return False


def _save_chunk(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append .npz to a name
            np.savez(handle, **arrays)


def _pending(files: list[Path | None], shard: tuple[int, int]) -> list[int]:
    """Chunks of this shard still to encode (None: the chunk's rows are taken from the finished arrays)."""
    i, n = shard
    return [j for j, path in enumerate(files) if j % n == i and path is not None and not path.exists()]


def _concatenate(files: list[Path | None], chunks: list[range], targets: dict[str, Path],
                 base: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Join chunk arrays into .npy files (written through a memory map, atomically). Returns small extras.

    A chunk without a file (None) takes its rows from `base` (the arrays of the previous run).
    """
    present = [j for j, path in enumerate(files) if path is not None]
    if present:
        with np.load(files[present[0]]) as first:
            specs = {name: (first[name].dtype, first[name].shape[1:]) for name in first.files}
    else:
        specs = {name: (value.dtype, value.shape[1:]) for name, value in base.items()}
    n_rows = chunks[-1].stop if chunks else 0

    def parts(name: str):
        for j, rows in enumerate(chunks):
            if files[j] is None:
                yield rows, base[name][rows.start:rows.stop]
            else:
                with np.load(files[j]) as chunk:
                    yield rows, chunk[name]

    extras = {}
    for name, (dtype, tail) in specs.items():
        if name not in targets:
            extras[name] = np.concatenate([part for _, part in parts(name)])
            continue
        with atomic_path(targets[name]) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, *tail))
            for rows, part in parts(name):
                out[rows.start:rows.stop] = part
            out.flush()
            del out
    return extras


# --- what the image pass read ---------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def image_file_digests(inputs: SplitInputs, rows: list[int], known: pd.DataFrame | None, threads: int = 1,
                       progress: bool = True, defer: np.ndarray | None = None) -> pd.DataFrame:
    """sha256 of the image file of each row in `rows` (all rows listed; others get ""), with size and mtime.

    `known`: the table of an earlier run; a file with the same listed path, size and mtime keeps its digest
    without being read again. Only regular files are read (a FIFO or device would block). `defer`: rows whose
    file is not read here but by the decoder, which hashes the bytes it reads (their digest stays "").
    """
    n = len(inputs)
    listed = inputs.listed_paths
    sizes, mtimes, digests = [-1] * n, [-1] * n, [""] * n
    previous = {}
    if known is not None and len(known):
        previous = dict(zip(known["path"], zip(known["size"], known["mtime_ns"], known["sha256"])))
    to_hash = []
    for r in rows:
        path = inputs.image_paths[r]
        if path is None:
            digests[r] = MISSING_FILE
            continue
        try:
            info = os.stat(path)
        except OSError as err:
            digests[r] = MISSING_FILE if isinstance(err, FileNotFoundError) else f"error {err.errno}"
            continue
        if not stat.S_ISREG(info.st_mode):
            digests[r] = "not a regular file"
            continue
        sizes[r], mtimes[r] = info.st_size, info.st_mtime_ns
        hit = previous.get(listed[r])
        if hit is not None and hit[0] == info.st_size and hit[1] == info.st_mtime_ns:
            digests[r] = hit[2]
        elif defer is None or not defer[r]:
            to_hash.append(r)

    def digest(r: int) -> str:
        try:
            return _file_digest(inputs.image_paths[r])
        except OSError as err:
            return f"error {err.errno}"

    if to_hash:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # hashing and reading release the GIL
            hashed = tqdm(pool.map(digest, to_hash), total=len(to_hash), desc="digest image files", unit="file",
                          disable=not progress or len(to_hash) < 1000)
            for r, value in zip(to_hash, hashed):
                digests[r] = value
    return pd.DataFrame({"path": listed, "size": np.array(sizes, np.int64), "mtime_ns": np.array(mtimes, np.int64),
                         "sha256": digests})


def image_files_signature(paths: list[Path | None]) -> str:
    """Path, size and mtime of every image file: a cheap sign that a file may have changed (the image
    pass itself decides by content whether it did)."""
    sha = hashlib.sha256()
    for path in paths:
        try:
            info = os.stat(path) if path is not None else None
        except OSError:
            info = None
        sha.update(f"{path}\t{info.st_size if info else -1}\t{info.st_mtime_ns if info else -1}\n".encode())
    return sha.hexdigest()


def _chunk_content_key(pass_key: str, start: int, stop: int, digests: list[str]) -> str:
    return _key({"pass": pass_key, "rows": [start, stop], "files": digests})


# --- the passes -------------------------------------------------------------------------------
@dataclass
class PassResult:
    kind: str
    done: bool          # final arrays written (False: a shard run, or chunks of other shards missing)
    encoded: int        # chunks encoded by this call
    missing: int = 0    # chunks still missing (other shards)
    info: dict = field(default_factory=dict)


def _up_to_date(manifest: dict, split: str, kind: str, key: str, paths: list[Path]) -> bool:
    """The finished arrays of this pass are made with `key` and each file still holds what was written
    (size and checksum in the manifest). A damaged file is named in one warning and the pass rebuilds."""
    entry = manifest.get("splits", {}).get(split, {}).get(kind, {})
    if entry.get("key") != key:
        return False
    checksums = entry.get("checksums", {})
    for path in paths:
        problem = written_problem(path, checksums.get(path.name))
        if problem:
            log.warning("[encode] %s: %s; the %s %s arrays are built again", path, problem, split, kind)
            return False
    return True


def _checksums(paths) -> dict:
    return {path.name: written_record(path) for path in paths}


def _read_files_table(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - a damaged table only costs rehashing the image files
        log.warning("[encode] %s: unreadable (%s); image files are hashed again", path, type(err).__name__)
        return None


def _write_table(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


@contextlib.contextmanager
def _pass_bar(shared, total: int, progress: bool, what: str, unit: str):
    """The bar a pass advances: the stage's shared one (its total grown by `total`, `what` shown beside
    it), or a bar of the pass's own."""
    if shared is None:
        with tqdm(total=total, disable=not progress, desc=f"encode {what}", unit=unit) as own:
            yield own
        return
    shared.total += total
    shared.set_postfix_str(what, refresh=True)
    yield shared


def image_pass(inputs: SplitInputs, split: str, enc_cfg, cache_dir: Path, get_encoder, shard=(0, 1),
               progress: bool = True, bar=None, force: bool = False) -> PassResult:
    """Image embeddings, has_image flags and image statistics of one split.

    bar: a progress bar shared by the stage's passes (its total grows by this pass's images); without
    one, the pass shows its own when `progress`. force: encode every image again (no finished array,
    chunk or file digest reused)."""
    name = image_encoder_name(enc_cfg)
    out_dir = encoder_dir(cache_dir, encoder_folder(enc_cfg, "image"))
    pids_digest = pid_digest(inputs.pids)
    key = image_pass_key(enc_cfg, pids_digest)
    targets = {"image": out_dir / f"{split}_image.npy", "has_image": out_dir / f"{split}_has_image.npy",
               "imgstats": out_dir / f"{split}_imgstats.npy"}
    bad_file = out_dir / f"{split}_bad_images.json"
    files_file = out_dir / f"{split}_image_files.parquet"
    manifest = {} if force else read_manifest(out_dir)
    finished = _up_to_date(manifest, split, "image", key, [*targets.values(), bad_file, files_file])
    known = None if force else _read_files_table(files_file)
    chunks = _chunks(len(inputs), enc_cfg.batch_size)
    shard_i, shard_n = parse_shard(shard)
    mine = [j for j in range(len(chunks)) if j % shard_n == shard_i]
    chunk_dir = out_dir / "_chunks" / f"{split}-image-{key}"
    if force:
        _remove_chunks(chunk_dir)
    old_pieces = manifest["splits"][split]["image"].get("pieces", []) if finished else []
    # a file is read here only when its digest decides whether finished rows or a chunk file are reused; the
    # others are encoded anyway, and the decoder hashes the bytes it reads: a fresh run reads each image once
    candidate = np.zeros(len(inputs), bool)
    for start, stop, *_ in old_pieces + [rows for rows in map(_chunk_rows, chunk_dir.glob("*.npz")) if rows]:
        candidate[start:stop] = True
    files = image_file_digests(inputs, [r for j in mine for r in chunks[j]], known, enc_cfg.num_workers,
                               progress and bar is None, defer=~candidate if enc_cfg.decoder == "pillow" else None)
    digests = files["sha256"].tolist()

    def content(start: int, stop: int) -> str:
        return _chunk_content_key(key, start, stop, digests[start:stop])

    # where each row comes from: a piece of the finished arrays whose files are unchanged (None), or a chunk
    # file of any batch size (an earlier run, a shard) whose files are unchanged; the rest is encoded
    sources: dict[int, tuple[int, Path | None]] = {}
    covered = np.zeros(len(inputs), bool)
    for start, stop, piece in old_pieces:
        if piece == content(start, stop):
            sources[start] = (stop, None)
            covered[start:stop] = True
    pending = _uncovered([chunks[j] for j in mine], covered)
    if shard_n == 1 and not pending:
        info = manifest["splits"][split]["image"]
        if not files[["size", "mtime_ns"]].equals(known[["size", "mtime_ns"]]):
            _write_table(files_file, files.assign(reason=known["reason"], precision=known["precision"]))
            info["checksums"].update(_checksums([files_file]))
            update_manifest(out_dir, split, "image", info, len(inputs))
        log.info("[encode] %s images (%s): up to date", split, name)
        return PassResult("image", True, 0, info=info)
    for path in sorted(chunk_dir.glob("*.npz")):
        rows = _chunk_rows(path)
        if (rows is not None and rows[1] <= len(inputs) and not covered[rows[0]:rows[1]].any()
                and rows[2] == content(rows[0], rows[1]) and _usable_chunk(path)):
            sources[rows[0]] = (rows[1], path)
            covered[rows[0]:rows[1]] = True
    pending = _uncovered([chunks[j] for j in mine], covered)
    reused = any(path is None for _, path in sources.values())
    encoder = None
    if pending:
        encoder = get_encoder()
        batches = [list(rows) for rows in pending]
        if enc_cfg.decoder == "pillow":
            dataset = PostImages(inputs.image_paths, encoder.prep, enc_cfg.max_image_pixels, inputs.image_problems,
                                 digests=True)
            loader = image_loader(dataset, batches, enc_cfg.num_workers, pin_memory=encoder.device.type == "cuda")
        else:  # encoders.decoder nvjpeg: JPEGs decoded on the GPU, the rest on the CPU
            from features.gpu_decode import check_decoder, gpu_image_batches
            check_decoder(enc_cfg.decoder, encoder.device)
            loader = gpu_image_batches(inputs.image_paths, batches, encoder.prep, enc_cfg.max_image_pixels,
                                       enc_cfg.num_workers, encoder.device, problems=inputs.image_problems)
        images = sum(len(rows) for rows in pending)
        with _pass_bar(bar, images, progress, f"{split} images ({name})", "image") as pass_bar:
            for idx, crops, ok, stats, reasons, *read in loader:
                for r, digest in zip(idx.tolist(), read[0] if read else []):
                    if not digests[r]:  # deferred: hashed by the decoder from the bytes it decoded
                        digests[r] = digest
                ok = ok.numpy().astype(bool)
                embedding = np.zeros((len(idx), encoder.dim), np.float16)
                if ok.all():
                    embedding[:] = encoder.embed(crops)
                elif ok.any():
                    embedding[ok] = encoder.embed(crops[ok])
                start, stop = int(idx[0]), int(idx[-1]) + 1
                path = _chunk_path(chunk_dir, start, content(start, stop), stop)
                _save_chunk(path, image=embedding, has_image=ok, imgstats=stats.numpy().astype(np.float32),
                            reason=np.array(reasons, dtype=str), precision=np.array([encoder.precision] * len(idx)))
                sources[start] = (stop, path)
                pass_bar.update(len(idx))
    if shard_n > 1:
        named = np.zeros(len(inputs), bool)
        for path in chunk_dir.glob("*.npz"):
            rows = _chunk_rows(path)
            if rows is not None:
                named[rows[0]:rows[1]] = True
        return PassResult("image", False, len(pending), len(_uncovered(chunks, named)))
    base = None
    if reused:  # rows of unchanged pieces come from the finished arrays and what the last run recorded
        base = {name: np.load(path, mmap_mode="r") for name, path in targets.items()}
        base.update(reason=known["reason"].to_numpy(dtype=str), precision=known["precision"].to_numpy(dtype=str))
    pieces = [(start, *sources[start]) for start in sorted(sources)]
    extras = _concatenate([path for _, _, path in pieces], [range(a, b) for a, b, _ in pieces], targets, base)
    reasons = extras["reason"]
    files = files.assign(sha256=digests, reason=reasons, precision=extras["precision"])
    bad = [{"row": int(r), "Pid": inputs.pids[r], "path": str(inputs.image_paths[r] or inputs.listed_paths[r]),
            "reason": str(reasons[r])} for r in np.flatnonzero(reasons != "")]
    write_json(bad_file, bad)
    _write_table(files_file, files)
    counts = Counter(_reason_kind(b["reason"]) for b in bad)
    if bad:  # a count per reason; the posts, paths and reasons are in the file (real data sets miss thousands)
        log.warning("[encode] %s: %d of %d posts have no usable image (%s); listed in %s", split, len(bad),
                    len(inputs), ", ".join(f"{kind}: {n}" for kind, n in counts.most_common()), bad_file)
    if reused:
        log.info("[encode] %s images: %d of %d images encoded again (their files changed)", split,
                 sum(len(rows) for rows in pending), len(inputs))
    n_video = sum(m == "video" for m in inputs.mediatypes)
    described = (encoder or get_encoder()).describe()
    info = {"key": key, "pid_digest": pids_digest, **described,
            "precision": sorted(set(extras["precision"].tolist())) or [described["precision"]],
            "shapes": {"image": [len(inputs), described["dim"]], "has_image": [len(inputs)],
                       "imgstats": [len(inputs), len(IMGSTATS_COLUMNS)]},
            "imgstats_columns": list(IMGSTATS_COLUMNS), "n_has_image": int(len(inputs) - len(bad)),
            "bad_images": dict(counts), "n_video_posts": n_video, "chunk_rows": enc_cfg.batch_size,
            "pieces": [[a, b, content(a, b)] for a, b, _ in pieces],
            "content_key": f"sha256 of every image file, per piece [start, stop); per file in {files_file.name}",
            "checksums": _checksums([*targets.values(), bad_file, files_file])}
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

    With `shared_pass` a token text that is itself a title or tag string (a post
    without tags, or without a title) and fits in `max_text_tokens` is the same
    input to the encoder at both lengths: its sentence's pass gives its token
    features too, and it is no token group's member.
    """
    sentences: list[str]               # distinct titles and tag strings
    token_texts: list[str]             # distinct token texts
    sentence_groups: list[list[int]]   # indices into `sentences`
    token_groups: list[list[int]]      # indices into `token_texts`
    title_index: np.ndarray            # (N,) row -> index into `sentences`
    tags_index: np.ndarray
    token_index: np.ndarray            # (N,) row -> index into `token_texts`
    # (len(sentences),) bool: the sentence's pass gives token features too (shared_pass); default none
    gives_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # (len(token_texts),) where each token text's features are: chunk j and row in that chunk's `tokens`
    token_group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    token_position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def make(cls, inputs: SplitInputs, encoder, max_tokens: int, tokens_per_group: int,
             shared_pass: bool = False) -> "TextPlan":
        sentences = list(dict.fromkeys(inputs.titles + inputs.tags))
        token_rows = inputs.token_texts()
        token_texts = list(dict.fromkeys(token_rows))
        where = {text: i for i, text in enumerate(sentences)}
        where_token = {text: i for i, text in enumerate(token_texts)}
        sentence_lengths = encoder.lengths(sentences)
        token_lengths = encoder.lengths(token_texts, max_tokens)
        # same ids at both truncations exactly when the token counts agree (the tokenizer keeps a prefix)
        shared = {k: where[t] for k, t in enumerate(token_texts)
                  if shared_pass and t in where and token_lengths[k] == sentence_lengths[where[t]]}
        own = [k for k in range(len(token_texts)) if k not in shared]
        sentence_groups = length_groups(sentence_lengths, tokens_per_group)
        token_groups = [[own[x] for x in g] for g in length_groups([token_lengths[k] for k in own], tokens_per_group)]
        gives_tokens = np.zeros(len(sentences), bool)
        gives_tokens[list(shared.values())] = True
        group_of, position = _placement(sentence_groups, len(sentences), gives_tokens)
        token_group, token_position = _placement(token_groups, len(token_texts), None, len(sentence_groups))
        for k, i in shared.items():
            token_group[k], token_position[k] = group_of[i], position[i]
        return cls(sentences, token_texts, sentence_groups, token_groups,
                   np.array([where[t] for t in inputs.titles], np.int64),
                   np.array([where[t] for t in inputs.tags], np.int64),
                   np.array([where_token[t] for t in token_rows], np.int64),
                   gives_tokens, token_group, token_position)

    @property
    def n_groups(self) -> int:
        return len(self.sentence_groups) + len(self.token_groups)


def _placement(groups: list[list[int]], n: int, counted: np.ndarray | None, offset: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Chunk (j + offset) and row in it of each of n distinct strings; with `counted`, the row among the
    group's members where `counted` (the rows a chunk holds token features of)."""
    group_of, position = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    for j, group in enumerate(groups):
        group = np.asarray(group, np.int64)
        if counted is not None:
            group = group[counted[group]]
        group_of[group] = j + offset
        position[group] = np.arange(len(group))
    return group_of, position


def _token_arrays(words: np.ndarray, mask: np.ndarray, max_tokens: int) -> dict[str, np.ndarray]:
    tokens = np.zeros((len(words), max_tokens, words.shape[-1]), np.float16)
    token_mask = np.zeros((len(words), max_tokens), bool)
    tokens[:, :words.shape[1]] = words[:, :max_tokens]
    token_mask[:, :mask.shape[1]] = mask[:, :max_tokens]
    return {"tokens": tokens, "token_mask": token_mask}


def _encode_text_group(plan: TextPlan, j: int, encoder, max_tokens: int) -> dict[str, np.ndarray]:
    if j < len(plan.sentence_groups):
        group = plan.sentence_groups[j]
        texts = [plan.sentences[i] for i in group]
        want = plan.gives_tokens[group] if len(plan.gives_tokens) else np.zeros(len(group), bool)
        if not want.any():
            return {"pooled": encoder.sentences(texts).astype(np.float16)}
        pooled, words, mask = encoder.encode(texts, max_tokens, want)
        return {"pooled": pooled.astype(np.float16), **_token_arrays(words, mask, max_tokens)}
    texts = [plan.token_texts[i] for i in plan.token_groups[j - len(plan.sentence_groups)]]
    return _token_arrays(*encoder.words(texts, max_tokens), max_tokens)


def _write_rows(target: Path, row_index: np.ndarray, group_of: np.ndarray, position: np.ndarray, load_group,
                dtype, tail: tuple):
    """Array of one output, row r = the encoded distinct string row_index[r], which is row position[k] of
    chunk group_of[k] (k = row_index[r]), written chunk by chunk through a memory map (atomically), so that only
    one chunk's outputs are in memory at a time."""
    row_group = group_of[row_index]
    rows_by_group = np.argsort(row_group, kind="stable")
    chunks = np.unique(row_group)
    bounds = np.searchsorted(row_group[rows_by_group], np.append(chunks, chunks[-1] + 1 if len(chunks) else 0))
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(row_index), *tail))
        for j, start, stop in zip(chunks, bounds[:-1], bounds[1:]):
            rows = rows_by_group[start:stop]
            out[rows] = load_group(int(j))[position[row_index[rows]]]
        out.flush()
        del out


def text_pass(inputs: SplitInputs, split: str, enc_cfg, cache_dir: Path, get_encoder, shard=(0, 1),
              progress: bool = True, bar=None, force: bool = False) -> PassResult:
    """Title and tag-string embeddings, and token features of title + " " + tags (see `TextPlan`)."""
    name = text_encoder_name(enc_cfg)
    out_dir = encoder_dir(cache_dir, encoder_folder(enc_cfg, "text"))
    pids_digest = pid_digest(inputs.pids)
    targets = {a: out_dir / f"{split}_{a}.npy" for a in ("title", "tags", "tokens", "token_mask")}
    length = enc_cfg.max_text_tokens
    # the strings are part of the key: a changed title is never joined from an old chunk file
    texts_digest = hashlib.sha256("\x00".join(inputs.titles + ["\x01"] + inputs.tags).encode()).hexdigest()[:16]
    key = text_pass_key(enc_cfg, pids_digest, texts_digest)
    manifest = {} if force else read_manifest(out_dir)
    if _up_to_date(manifest, split, "text", key, list(targets.values())):
        log.info("[encode] %s texts (%s): up to date", split, name)
        return PassResult("text", True, 0, info=manifest["splits"][split]["text"])
    encoder = get_encoder()
    shared_pass = bool(getattr(enc_cfg, "text_shared_pass", False))
    plan = TextPlan.make(inputs, encoder, length, getattr(encoder, "tokens_per_group", 1024), shared_pass)
    # the groups depend on the tokens per group and the shared pass (execution settings): chunks of other
    # groups stay apart
    chunk_dir = (out_dir / "_chunks" / f"{split}-text-{key}-g{getattr(encoder, 'tokens_per_group', 1024)}"
                 f"{'-s' if shared_pass else ''}")
    if force:
        _remove_chunks(chunk_dir)
    chunk_files = [_chunk_path(chunk_dir, j) for j in range(plan.n_groups)]
    pending = _pending(chunk_files, parse_shard(shard))
    sizes = [len(g) for g in plan.sentence_groups + plan.token_groups]
    log.info("[encode] %s texts (%s): %d posts -> %d distinct titles and tag strings, %d distinct token texts, "
             "%d groups", split, name, len(inputs), len(plan.sentences), len(plan.token_texts), plan.n_groups)
    with _pass_bar(bar, sum(sizes[j] for j in pending), progress, f"{split} texts ({name})", "text") as pass_bar:
        for j in pending:
            _save_chunk(chunk_files[j], **_encode_text_group(plan, j, encoder, length))
            pass_bar.update(sizes[j])
    missing = len(_pending(chunk_files, (0, 1)))
    if missing or parse_shard(shard)[1] > 1:
        return PassResult("text", False, len(pending), missing)
    dim = encoder.dim

    def loader(array: str):
        def load(j: int) -> np.ndarray:
            with np.load(_chunk_path(chunk_dir, j)) as chunk:
                return chunk[array]
        return load

    sentence_group, sentence_position = _placement(plan.sentence_groups, len(plan.sentences), None)
    for array, index in (("title", plan.title_index), ("tags", plan.tags_index)):
        _write_rows(targets[array], index, sentence_group, sentence_position, loader("pooled"), np.float16, (dim,))
    for array, dtype, tail in (("tokens", np.float16, (length, dim)), ("token_mask", bool, (length,))):
        _write_rows(targets[array], plan.token_index, plan.token_group, plan.token_position, loader(array), dtype,
                    tail)
    described = encoder.describe()
    info = {"key": key, "pid_digest": pids_digest, **described, "max_text_tokens": length,
            "tokens_text": "title + ' ' + tags, truncated to max_text_tokens (special tokens included)",
            "shapes": {"title": [len(inputs), dim], "tags": [len(inputs), dim],
                       "tokens": [len(inputs), length, dim], "token_mask": [len(inputs), length]},
            "n_empty_title": sum(not t.strip() for t in inputs.titles),
            "n_empty_tags": sum(not t.strip() for t in inputs.tags),
            "n_distinct_sentences": len(plan.sentences), "n_distinct_token_texts": len(plan.token_texts),
            "n_token_texts_from_sentence_pass": int(plan.gives_tokens.sum()),
            "checksums": _checksums(targets.values())}
    update_manifest(out_dir, split, "text", info, len(inputs))
    _remove_chunks(chunk_dir)
    return PassResult("text", True, len(pending), info=info)


# --- manifest -----------------------------------------------------------------------------
def read_manifest(out_dir: Path, warn: bool = True) -> dict:
    """The folder's manifest; one that cannot be read is named in a warning and counts as none (every
    array it described is built again)."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = read_json(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("splits", {}), dict):
            raise ValueError("not a manifest object")
        return manifest
    except (ValueError, OSError) as err:
        if warn:
            log.warning("[encode] %s: unreadable (%s: %s); the arrays it describes are built again", path,
                        type(err).__name__, err)
        return {}


def update_manifest(out_dir: Path, split: str, kind: str, info: dict, n_rows: int) -> None:
    manifest = read_manifest(out_dir, warn=False)  # a damaged one was named when the pass read it
    manifest.update({"encoder": out_dir.name, "dtype": "float16", "row_order": "posts table row order"})
    entry = manifest.setdefault("splits", {}).setdefault(split, {})
    if entry.get("pid_digest") not in (None, info["pid_digest"]):
        entry.pop("image" if kind == "text" else "text", None)  # made from another posts table: stale
    entry.update({"n": n_rows, "pid_digest": info["pid_digest"], kind: info})
    write_json(out_dir / "manifest.json", manifest)


def copy_chunks(sources: list[Path], cache_dir: Path) -> int:
    """Copy finished chunk files of shard runs that used other encoder caches (`sources`) into `cache_dir`."""
    copied = 0
    for root in sources:
        for path in sorted(Path(root).glob("*/_chunks/*/*.npz")):
            target = Path(cache_dir) / path.relative_to(root)
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
                copied += 1
    return copied
