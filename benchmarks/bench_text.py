#!/usr/bin/env python
"""Speed of the `encode` stage's text pass (MiniLM, float32, CPU) against two baselines, same model, same
texts, same process, alternating runs:

- `plain`: the loop one writes first, one text at a time through the model (no batch, no padding);
- `chunked`: the stage as it was before (texts grouped within chunks of 64 posts: each chunk's titles, tag
  strings and token texts one padded batch each);
- `stage`: the stage's text pass (`features.encoders_run.text_pass`: distinct strings of the whole split,
  grouped by token count), chunk files and final arrays included.

    python benchmarks/bench_text.py                         # 3,000 demo posts (titles and tag strings)
    python benchmarks/bench_text.py --n-posts 600 --plain-posts 100 --repeats 1
    python benchmarks/bench_text.py --texts unique          # every title and tag string distinct

Texts are the built-in demo's (`features.demo`: empty titles, camera file names, subject words, users'
habitual tags: repeated strings, as on real SMPD, which the stage encodes once), and (`--texts unique`,
or both with the default `--texts both`) the same texts made all distinct by appending the post's number
to every title and tag string (one or two tokens more each): the stage's gain without repetition. texts/s counts titles and tag strings (two a post), as the issue did; the token texts'
work is included in the time. On a shared machine wall time depends on the load, so every rate is given
by wall time and by this process's CPU time (x torch threads: the wall rate of an idle machine), and the
ratios are what to compare. Prints one JSON line, with the largest difference between the stage's arrays
and the chunked ones (float16 outputs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# as in run_all.py: OpenMP threads that spin while waiting stall on a busy machine; set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402

from features.demo import make_demo  # noqa: E402
from features.encoders_run import SplitInputs, text_pass  # noqa: E402
from features.encoders_text import BackboneTextEncoder, load_text_encoder  # noqa: E402
from features.smpd import read_smpd  # noqa: E402
from pipeline.config import EncoderConfig  # noqa: E402

OLD_CHUNK_ROWS = 64  # posts per chunk of the stage before (encoders.batch_size)


def demo_texts(folder: Path, n_posts: int) -> SplitInputs:
    make_demo(folder / "data", folder / "labels.txt", n_train=n_posts, n_test=1, image_size=8)
    train, _, _ = read_smpd(folder / "data")
    return SplitInputs.from_posts(train, folder / "data")


def all_unique(inputs: SplitInputs) -> SplitInputs:
    """The same posts with every title and tag string distinct (the post's number appended)."""
    return SplitInputs(pids=inputs.pids, image_paths=inputs.image_paths,
                       titles=[f"{t} post{r}".strip() for r, t in enumerate(inputs.titles)],
                       tags=[f"{t} post{r}".strip() for r, t in enumerate(inputs.tags)])


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def rate(n_texts: int, timer: Timer) -> dict:
    threads = torch.get_num_threads()
    return {"texts_per_s": round(n_texts / timer.wall, 1),
            "texts_per_cpu_s_x_threads": round(n_texts / timer.cpu * threads, 1),
            "seconds": round(timer.wall, 2), "cpu_seconds": round(timer.cpu, 2)}


def run_stage(inputs: SplitInputs, encoder, enc_cfg: EncoderConfig, work_dir: Path) -> tuple[dict, dict]:
    with Timer() as timer:
        result = text_pass(inputs, "bench", enc_cfg, work_dir, lambda: encoder, progress=False)
    assert result.done, result
    arrays = load_encoded_text(work_dir, enc_cfg)
    return rate(2 * len(inputs), timer), arrays


def load_encoded_text(work_dir: Path, enc_cfg: EncoderConfig) -> dict:
    from features.encoders import array_path
    return {a: np.load(array_path(work_dir, enc_cfg, "bench", a)) for a in ("title", "tags", "tokens", "token_mask")}


def run_chunked(inputs: SplitInputs, encoder: BackboneTextEncoder, max_tokens: int) -> tuple[dict, dict]:
    """The text pass before: per chunk of 64 posts, each kind of text one batch padded to its longest."""
    one_batch = BackboneTextEncoder(encoder.backbone, encoder.device, encoder.max_length, tokens_per_group=1 << 30,
                                    precision=encoder.precision)
    token_texts = inputs.token_texts()
    out = {"title": [], "tags": [], "tokens": [], "token_mask": []}
    with Timer() as timer:
        for start in range(0, len(inputs), OLD_CHUNK_ROWS):
            rows = slice(start, start + OLD_CHUNK_ROWS)
            out["title"].append(one_batch.sentences(inputs.titles[rows]).astype(np.float16))
            out["tags"].append(one_batch.sentences(inputs.tags[rows]).astype(np.float16))
            words, mask = one_batch.words(token_texts[rows], max_tokens)
            tokens = np.zeros((len(words), max_tokens, encoder.dim), np.float16)
            token_mask = np.zeros((len(words), max_tokens), bool)
            tokens[:, :words.shape[1]], token_mask[:, :mask.shape[1]] = words, mask
            out["tokens"].append(tokens)
            out["token_mask"].append(token_mask)
    return rate(2 * len(inputs), timer), {k: np.concatenate(v) for k, v in out.items()}


def run_plain(inputs: SplitInputs, encoder: BackboneTextEncoder, n_posts: int, max_tokens: int) -> dict:
    """One text at a time: tokenize, run, pool; titles, tag strings and token texts of the first n posts."""
    backbone, token_texts = encoder.backbone, inputs.token_texts()
    with Timer() as timer, torch.inference_mode():
        for r in range(n_posts):
            backbone.encode([inputs.titles[r]], encoder.max_length)
            backbone.encode([inputs.tags[r]], encoder.max_length)
            backbone.encode([token_texts[r]], max_tokens)
    return rate(2 * n_posts, timer)


def measure(inputs: SplitInputs, encoder: BackboneTextEncoder, enc_cfg: EncoderConfig, args, folder: Path) -> dict:
    """plain, chunked and stage on one set of texts, alternating, the best of `args.repeats` each."""
    runs = {"plain": [], "chunked": [], "stage": []}
    for repeat in range(args.repeats):
        n_plain = min(args.plain_posts, len(inputs))
        runs["plain"].append(run_plain(inputs, encoder, n_plain, enc_cfg.max_text_tokens))
        chunked, chunked_arrays = run_chunked(inputs, encoder, enc_cfg.max_text_tokens)
        runs["chunked"].append(chunked)
        stage, stage_arrays = run_stage(inputs, encoder, enc_cfg, folder / f"work-{repeat}")
        runs["stage"].append(stage)
    best = {k: max(v, key=lambda r: r["texts_per_cpu_s_x_threads"]) for k, v in runs.items()}
    result = {"distinct_titles": len(set(inputs.titles)), "distinct_tags": len(set(inputs.tags)),
              "distinct_token_texts": len(set(inputs.token_texts())),
              "empty_titles": sum(not t for t in inputs.titles), **best}
    for base in ("plain", "chunked"):
        for measure_name in ("texts_per_s", "texts_per_cpu_s_x_threads"):
            key = f"stage_over_{base}" + ("" if measure_name == "texts_per_s" else "_cpu")
            result[key] = round(best["stage"][measure_name] / best[base][measure_name], 2)
    diff = {k: float(np.abs(stage_arrays[k].astype(np.float32) - chunked_arrays[k].astype(np.float32)).max())
            for k in ("title", "tags", "tokens")}
    assert np.array_equal(stage_arrays["token_mask"], chunked_arrays["token_mask"])
    result["max_abs_diff_stage_vs_chunked"] = diff
    result["all_runs"] = {k: [r["texts_per_s"] for r in v] for k, v in runs.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-posts", type=int, default=3000, help="demo posts whose texts are encoded")
    parser.add_argument("--plain-posts", type=int, default=300, help="posts of the one-text-at-a-time loop")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best counts")
    parser.add_argument("--texts", choices=("demo", "unique", "both"), default="both",
                        help="the demo's texts (with their repeats), all made distinct, or both")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_text_") as scratch:
        folder = Path(scratch)
        inputs = demo_texts(folder, args.n_posts)
        enc_cfg = EncoderConfig(text="minilm", device="cpu", precision="fp32")
        encoder = load_text_encoder(enc_cfg, torch.device("cpu"))
        result = {"model": encoder.model_id, "precision": encoder.precision, "n_posts": len(inputs),
                  "max_text_length": enc_cfg.max_text_length, "max_text_tokens": enc_cfg.max_text_tokens,
                  "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "repeats": args.repeats}
        if args.texts in ("demo", "both"):
            result["demo_texts"] = measure(inputs, encoder, enc_cfg, args, folder / "demo")
        if args.texts in ("unique", "both"):
            result["unique_texts"] = measure(all_unique(inputs), encoder, enc_cfg, args, folder / "unique")
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
