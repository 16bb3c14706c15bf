#!/usr/bin/env python
"""The prototype stage's out-of-fold training on CPU, this tree against a baseline commit, side by side.

    python benchmarks/bench_prototype_stage.py --baseline-ref 58ad096                 # demo-sized
    python benchmarks/bench_prototype_stage.py --baseline-ref 58ad096 --n-train 300 --n-test 100 \\
        --folds 2 --epochs 1 --repeats 1                                               # a quick look

Needs an encoded demo work folder (`python pipeline/run_all.py --stages make_demo,read_data,make_folds,
build_metadata,encode`). Each run is a fresh process that loads the encoded arrays, takes the first
`--n-train` train and `--n-test` test posts, assigns `--folds` seeded inner folds and times
`models.train_prototype.fit_oof` (K networks, their out-of-fold and test embeddings: the stage's
work, without its file I/O) with the config's prototype settings and `--epochs`. Runs alternate
baseline, this tree, baseline, ... so a shared machine's load falls on both alike; the figure is
the ratio of the best times. Prints one JSON line, including whether both trees' outputs are
bit-identical (a change of CPU numerics must be a deliberate one).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import dataclasses, json, sys, time
tree, work, config, n_train, n_test, folds, epochs, out, overrides = sys.argv[1:10]
import numpy as np, torch
from common.io import read_parquet
from pipeline.catalog import encoder_cache
from pipeline.config import load_config
from features.encoders import load_encoded, load_text_backbone
from models.train_prototype import ClassVocab, ProtoData, make_data, fit_oof
from pathlib import Path
config = load_config(config, json.loads(overrides))
work = Path(work)
columns = ["Pid", "Uid", "Postdate", "Category", "Subcategory", "Concept"]
posts = {s: read_parquet(work / f"posts_{s}.parquet", columns=columns + (["label"] if s == "train" else []))
         for s in ("train", "test")}
vocab = ClassVocab.from_posts(posts["train"])
def head(data, n):
    return ProtoData(**{f.name: ({k: v[:n] for k, v in getattr(data, f.name).items()} if f.name == "labels"
                                 else np.asarray(getattr(data, f.name)[:n])) for f in dataclasses.fields(data)})
data = {s: make_data(load_encoded(encoder_cache(work), config.encoders, s), posts[s], vocab) for s in ("train", "test")}
train, test = head(data["train"], int(n_train)), head(data["test"], int(n_test))
cfg = config.prototype.with_fields(epochs=int(epochs), device="cpu")
backbone = load_text_backbone(config.encoders) if cfg.model.use_prompts_global or cfg.model.use_prompts_local else None
feature_fold = np.random.default_rng(0).permutation(len(train)) % int(folds)
torch.manual_seed(config.seed)
started = time.perf_counter()
train_out, test_out = fit_oof(cfg, train, test, feature_fold, vocab, backbone, config.seed, torch.device("cpu"),
                              None, "", False)
seconds = time.perf_counter() - started
np.savez(out, **{f"train_{k}": v for k, v in train_out.items()}, **{f"test_{k}": v for k, v in test_out.items()})
print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))
"""


def baseline_tree(ref: str, into: Path) -> Path:
    """The files of commit `ref` (models/, features/, pipeline/, configs/) in a folder of their own."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "models", "features", "pipeline", "configs"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_once(tree: Path, args, out: Path) -> float:
    # as run_all.py does: OpenMP threads that spin while waiting stall on a busy machine
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(args.work_dir), str(args.config),
                           str(args.n_train), str(args.n_test), str(args.folds), str(args.epochs), str(out),
                           json.dumps(args.overrides)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"run in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def compare_outputs(a: Path, b: Path) -> dict:
    with np.load(a) as x, np.load(b) as y:
        names = sorted(set(x.files) | set(y.files))
        same_names = set(x.files) == set(y.files)
        identical = same_names and all(np.array_equal(x[n], y[n], equal_nan=True) for n in names)
        diff = max((float(np.nanmax(np.abs(x[n].astype(np.float64) - y[n]))) for n in names
                    if n in x.files and n in y.files and x[n].size), default=0.0)
    return {"outputs_identical": bool(identical), "max_abs_diff": diff, "same_output_names": same_names}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-ref", required=True, help="git commit of the baseline")
    p.add_argument("--work-dir", type=Path, default=ROOT / "work" / "demo", help="an encoded demo work folder")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="runs of each tree")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override for both trees, e.g. --set prototype.train.batch_size=256")
    args = p.parse_args(argv)
    if not (args.work_dir / "posts_train.parquet").is_file():
        raise SystemExit(f"{args.work_dir} has no posts_train.parquet: build an encoded demo work folder first")
    with tempfile.TemporaryDirectory(prefix="bench_proto_stage_") as tmp:
        tmp = Path(tmp)
        trees = {"baseline": baseline_tree(args.baseline_ref, Path(tempfile.mkdtemp(dir=tmp))), "current": ROOT}
        times: dict[str, list[float]] = {name: [] for name in trees}
        started = time.perf_counter()
        for _ in range(args.repeats):
            for name, tree in trees.items():
                times[name].append(run_once(tree, args, tmp / f"{name}.npz"))
        result = {"benchmark": "prototype_stage_cpu", "baseline_ref": args.baseline_ref,
                  "head": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip(),
                  "n_train": args.n_train, "n_test": args.n_test, "folds": args.folds, "epochs": args.epochs,
                  "overrides": args.overrides, "seconds": {k: [round(t, 1) for t in v] for k, v in times.items()},
                  "speedup_best": round(min(times["baseline"]) / min(times["current"]), 2),
                  **compare_outputs(tmp / "baseline.npz", tmp / "current.npz"),
                  "load_avg_1min_at_end": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
                  "wall_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
