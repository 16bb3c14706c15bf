#!/usr/bin/env python
"""The `encode` stage's text pass on texts of real length: today's code (a checkout of another commit, by
default `main`) against this checkout, side by side, alternating, same texts, same model, each run in a
fresh process (the model's load is not timed: only `features.encoders_run.text_pass`).

    python benchmarks/bench_text_real_length.py                           # 1,500 posts, 3 tag shares
    python benchmarks/bench_text_real_length.py --n-posts 600 --repeats 1 --no-tags 0.3
    python benchmarks/bench_text_real_length.py --base-commit main --threads 2 --bf16

Texts (all distinct, except the empty string of posts without tags or title): words drawn uniformly from
the whole words of MiniLM's vocabulary (vocab.txt lines 2,000-20,000, alphabetic, 3 letters or more: about
one WordPiece token a word, as ordinary English words are), a title of n words with n log-uniform in
[5, 60] (median about 17 words; with CLS and SEP 7 to 62 tokens, so none reaches the 77-token cut of
`max_text_length`, while most token texts, title + tags, exceed the 32 of `max_text_tokens`), a tag string
of m tags with m log-uniform in [1, 40] (median about 6). `--no-tags` is the share of posts without tags
(their token text is the title: e.g. 1.0 for a Reddit-like set of titles only), `--no-title` the share
without a title; by default the benchmark runs the shares 0, 0.3 and 1.0 of posts without tags (10% without
a title).

Variants (`--variants`): `base` the text pass of the base commit, fp32 (today); `off` this checkout with
`encoders.text_shared_pass` off (the plan of today: must run as fast); `shared` this checkout with it on;
`bf16` (with `--bf16`) the base commit with `encoders.precision: bf16` (CPU autocast; not equal to float16
rounding: shown for its speed and its difference). texts/s counts titles and tag strings (two a post) and
includes the token texts' work, as `bench_text.py` does; every rate is given by wall time and by the
worker's CPU time x its torch threads. Prints one JSON line: per share, each variant's best run, the ratios
against `base`, and the largest absolute difference of each array against `base`'s (float16 outputs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ARRAYS = ("title", "tags", "tokens", "token_mask")


def real_length_texts(n_posts: int, no_tags: float, no_title: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Titles and tag strings as described in the module docstring (deterministic by seed)."""
    import numpy as np
    from features.encoders_text import minilm_path
    lines = (minilm_path() / "vocab.txt").read_text().splitlines()[2000:20000]
    vocab = np.array([w for w in lines if w.isalpha() and len(w) > 2])
    rng = np.random.default_rng(seed)

    def words(lo: int, hi: int) -> str:
        n = int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1))))
        return " ".join(rng.choice(vocab, min(n, hi)))

    titles = ["" if rng.random() < no_title else words(5, 60) for _ in range(n_posts)]
    tags = ["" if rng.random() < no_tags else words(1, 40) for _ in range(n_posts)]
    return titles, tags


def worker(args) -> int:
    """One timed text pass of the checkout on PYTHONPATH; arrays and timing written to args.out."""
    import numpy as np
    import torch
    from features.encoders import array_path
    from features.encoders_run import SplitInputs, text_pass
    from features.encoders_text import load_text_encoder
    from pipeline.config import EncoderConfig
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts_file).read_text())
    n = len(texts["titles"])
    inputs = SplitInputs(pids=[str(i) for i in range(n)], image_paths=[None] * n, titles=texts["titles"],
                         tags=texts["tags"])
    enc_cfg = EncoderConfig(text=args.text, device="cpu", precision=args.precision)
    if args.text == "clip":
        enc_cfg.clip_model = args.clip_model
    enc_cfg.text_shared_pass = args.shared  # an unknown attribute on older commits: no effect there
    encoder = load_text_encoder(enc_cfg, torch.device("cpu"))
    encoder.sentences(["warm up"])
    out = Path(args.out)
    wall, cpu = time.perf_counter(), time.process_time()
    result = text_pass(inputs, "bench", enc_cfg, out / "cache", lambda: encoder, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.done, result
    np.savez(out / "arrays.npz", **{a: np.load(array_path(out / "cache", enc_cfg, "bench", a)) for a in ARRAYS})
    threads = torch.get_num_threads()
    (out / "timing.json").write_text(json.dumps({
        "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "torch_threads": threads,
        "texts_per_s": round(2 * n / wall, 1), "texts_per_cpu_s_x_threads": round(2 * n / cpu * threads, 1),
        "from_sentence_pass": result.info.get("n_token_texts_from_sentence_pass", 0)}))
    return 0


def checkout(commit: str, folder: Path) -> Path:
    """The files of `commit` (git archive: no worktree of the shared repository is made)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def run_variant(root: Path, variant: str, texts_file: Path, out: Path, args) -> dict:
    out.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--texts-file", str(texts_file),
               "--out", str(out), "--text", args.text, "--clip-model", args.clip_model,
               "--threads", str(args.threads),
               "--precision", "bf16" if variant == "bf16" else "fp32"] + (["--shared"] if variant == "shared" else [])
    # OpenMP threads that spin while waiting stall on a busy machine (as run_all.py sets)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    subprocess.run(command, cwd=root, env=env, check=True)
    return json.loads((out / "timing.json").read_text())


def measure(no_tags: float, roots: dict[str, Path], folder: Path, args) -> dict:
    import numpy as np
    titles, tags = real_length_texts(args.n_posts, no_tags, args.no_title, args.seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts_file = folder / "texts.json"
    texts_file.write_text(json.dumps({"titles": titles, "tags": tags}))
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    arrays = {}
    for repeat in range(args.repeats):
        order = args.variants if repeat % 2 == 0 else args.variants[::-1]  # alternate: neither runs first always
        for variant in order:
            out = folder / f"{variant}-{repeat}"
            runs[variant].append(run_variant(roots[variant], variant, texts_file, out, args))
            if variant not in arrays:
                with np.load(out / "arrays.npz") as loaded:
                    arrays[variant] = {a: loaded[a] for a in ARRAYS}
    best = {v: max(r, key=lambda x: x["texts_per_cpu_s_x_threads"]) for v, r in runs.items()}
    from features.encoders_text import load_text_encoder  # token counts of the texts, for the description
    from pipeline.config import EncoderConfig
    import torch
    encoder = load_text_encoder(EncoderConfig(text="minilm", device="cpu"), torch.device("cpu"))
    lengths = np.array(encoder.lengths([t for t in titles if t]))
    result = {"no_tags_share": no_tags, "n_posts": args.n_posts, "distinct_titles": len(set(titles)),
              "distinct_tags": len(set(tags)), "title_tokens_median": float(np.median(lengths)),
              "title_tokens_p90": float(np.percentile(lengths, 90)), "title_tokens_max": int(lengths.max()),
              **best, "all_runs_texts_per_s": {v: [r["texts_per_s"] for r in rs] for v, rs in runs.items()}}
    base = "base" if "base" in best else args.variants[0]
    for variant in best:
        if variant == base:
            continue
        result[f"{variant}_over_{base}"] = round(best[variant]["texts_per_s"] / best[base]["texts_per_s"], 2)
        result[f"{variant}_over_{base}_cpu"] = round(
            best[variant]["texts_per_cpu_s_x_threads"] / best[base]["texts_per_cpu_s_x_threads"], 2)
        result[f"{variant}_max_abs_diff"] = {
            a: float(np.abs(arrays[variant][a].astype(np.float32) - arrays[base][a].astype(np.float32)).max())
            for a in ("title", "tags", "tokens")}
        result[f"{variant}_min_cosine"] = {a: _min_cosine(arrays[variant][a], arrays[base][a])
                                           for a in ("title", "tags")}
        result[f"{variant}_token_mask_equal"] = bool(np.array_equal(arrays[variant]["token_mask"],
                                                                    arrays[base]["token_mask"]))
    return result


def _min_cosine(a, b) -> float:
    """The least cosine similarity between a row of a and the same row of b (rows of b that are not zero)."""
    import numpy as np
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    keep = norms > 0
    return float(((a * b).sum(1)[keep] / norms[keep]).min()) if keep.any() else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-posts", type=int, default=1500)
    parser.add_argument("--no-tags", type=float, nargs="+", default=[0.0, 0.3, 1.0],
                        help="shares of posts without tags, one measurement each")
    parser.add_argument("--no-title", type=float, default=0.1, help="share of posts without a title")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant; the best counts")
    parser.add_argument("--base-commit", default="main", help="today's code: the commit the variants compare with")
    parser.add_argument("--variants", nargs="+", default=["base", "off", "shared"],
                        choices=["base", "off", "shared", "bf16"])
    parser.add_argument("--bf16", action="store_true", help="add the variant bf16 (base commit, CPU autocast)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of each run (0: torch's default)")
    parser.add_argument("--text", default="minilm", choices=["minilm", "clip"])
    parser.add_argument("--clip-model", default="openai/clip-vit-base-patch32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--shared", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.bf16 and "bf16" not in args.variants:
        args.variants.append("bf16")
    with tempfile.TemporaryDirectory(prefix="bench_text_real_length_") as scratch:
        folder = Path(scratch)
        base_root = checkout(args.base_commit, folder / "base-checkout")
        roots = {"base": base_root, "bf16": base_root, "off": REPO_ROOT, "shared": REPO_ROOT}
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        base = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", args.base_commit],
                              capture_output=True, text=True).stdout.strip()
        result = {"text": args.text, "base_commit": base, "commit": commit, "cpu_count": os.cpu_count(),
                  "threads": args.threads or "default", "repeats": args.repeats,
                  "shares": [measure(share, roots, folder / f"share-{share}", args) for share in args.no_tags],
                  "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
