#!/usr/bin/env python
"""Each `users.*` switch and the CatBoost member, one at a time, on several generated data sets.

    python benchmarks/bench_user_features.py --root /tmp/ufbench --out ufbench.json

Per data set the stages up to `build_metadata` run once; every run uses the metadata members only
(LightGBM `meta`, ridge `ridge_meta`, CatBoost on `meta`), one seed, no prototype network, no
tuning (`--base-set` adds overrides); then every variant reruns `user_features`, `train_trees`,
`train_linear` and `blend` with its own switches on top of the same base, and is scored on the
validation rows (the blend's cross-fitted score) and on the hidden test labels. The run time of
the four stages is recorded beside the scores (the machine is shared: compare within a data set).

Data sets: `demo<seed>[:n_train:n_test:n_users]` (features/demo.py) and `synth<seed>:<fraction>`
(benchmarks/synth_smpd.py: no images, no user text signal).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402

from common.io import read_json, read_parquet  # noqa: E402
from models.metrics import score  # noqa: E402
from pipeline import run_all  # noqa: E402

# metadata members only (no post embeddings: the encode stage is the costly one on a shared CPU); the
# user texts are still embedded by encoders.text, which the user_features stage loads itself
BASE = ["tuning.enabled=false", "prototype.enabled=false", "gbdt.seeds=[0]", "gbdt.feature_sets={meta: [meta]}",
        "ensemble.linear_members={ridge_meta: [meta]}", "catboost.feature_sets=[meta]",
        # every switch off, whatever the config's defaults: each variant turns on its own
        "users.text_dims=0", "users.mix=false", "users.timing=false", "users.trend=false",
        "users.similar_users=false", "catboost.enabled=false", "catboost.params={max_ctr_complexity: 4}"]
VARIANTS = {
    "base": [],
    "base_seed1": ["gbdt.seeds=[1]", "catboost.seeds=[1]"],  # seed noise: the same model, another seed
    "text": ["users.text_dims=4"],
    "mix": ["users.mix=true"],
    "timing": ["users.timing=true"],
    "trend": ["users.trend=true"],
    "similar": ["users.similar_users=true"],
    "catboost": ["catboost.enabled=true"],
    "catboost_ctr1": ["catboost.enabled=true", "catboost.params={max_ctr_complexity: 1}"],  # no combinations: faster
    "text_mix": ["users.text_dims=4", "users.mix=true"],
    "text_catboost": ["users.text_dims=4", "catboost.enabled=true", "catboost.params={max_ctr_complexity: 1}"],
    "text_mix_catboost": ["users.text_dims=4", "users.mix=true", "catboost.enabled=true",
                          "catboost.params={max_ctr_complexity: 1}"],
    "users_all": ["users.text_dims=4", "users.mix=true", "users.timing=true", "users.trend=true",
                  "users.similar_users=true"],
}
PREP_STAGES = "make_demo,read_data,make_folds,build_metadata"
VARIANT_STAGES = "user_features,train_trees,train_linear,blend"


def prepare(name: str, root: Path, base: list[str]) -> tuple[list[str], Path]:
    """Generate the data set, run the shared stages; return run_all's data arguments and the test labels."""
    work = root / name
    if name.startswith("demo"):
        parts = name[4:].split(":")
        sets = [f"demo.seed={int(parts[0])}"]
        if len(parts) == 4:
            sets += [f"demo.n_train={parts[1]}", f"demo.n_test={parts[2]}", f"demo.n_users={parts[3]}"]
        args = ["--work-dir", str(work)] + [a for s in sets for a in ("--set", s)]
        labels = work / "hidden_test_labels.txt"
    elif name.startswith("synth"):
        from benchmarks.synth_smpd import make_synthetic_smpd
        seed, fraction = name[5:].split(":")
        data, labels = work / "data", work / "test_labels.txt"
        if not labels.is_file():
            info = make_synthetic_smpd(data, float(fraction), int(seed))
            labels.write_text("".join(f"{v:.2f}\n" for v in info["test_labels"]))
        args = ["--work-dir", str(work), "--data-dir", str(data), "--config", str(REPO_ROOT / "configs" / "demo.yaml")]
    else:
        raise SystemExit(f"unknown data set {name!r}: expected demo<seed>[:n_train:n_test:n_users] or synth<seed>:<f>")
    common = args + [a for s in base for a in ("--set", s)] + ["--submissions-dir", str(root / "_submissions")]
    if run_all.main(common + ["--stages", PREP_STAGES]) != 0:
        raise SystemExit(f"{name}: preparing the data set failed")
    return common, labels


def evaluate(common: list[str], overrides: list[str], labels: Path, work: Path) -> dict:
    started = time.perf_counter()
    if run_all.main(common + [a for s in overrides for a in ("--set", s)] + ["--stages", VARIANT_STAGES]) != 0:
        raise SystemExit(f"variant {overrides} failed")
    seconds = time.perf_counter() - started
    final = read_parquet(work / "preds" / "final.parquet")
    info = read_json(work / "preds" / "final.json")
    y_test = np.loadtxt(labels, dtype=np.float64, ndmin=1)
    test = score(y_test, final.loc[final["split"] == "test", "pred"].to_numpy())
    lock = read_json(work / "stages.lock.json")["stages"]
    return {"val_src": info["score"]["src"], "val_mae": info["score"]["mae"], "test_src": test["src"],
            "test_mae": test["mae"], "members": {m: s["src"] for m, s in info["members"].items()},
            "weights": info["weights"], "seconds": round(seconds, 1),
            "user_features_s": (lock.get("user_features", {}).get("seconds")
                                if any(o.startswith("users.") for o in overrides) else None)}


def markdown(results: dict, metric: str) -> str:
    """Rows: variants; columns: validation and hidden-test `metric` per data set (base absolute, the rest
    as the difference to the mean of the two base seeds)."""
    names = list(results)
    head = ["variant"] + [f"{n} {part}" for n in names for part in ("val", "test")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    variants = [v for v in VARIANTS if any(v in results[n] for n in names)]
    for v in variants:
        cells = [v]
        for n in names:
            base = [results[n][b] for b in ("base", "base_seed1") if b in results[n]]
            for part in ("val", "test"):
                key = f"{part}_{metric}"
                if v not in results[n]:
                    cells.append("")
                elif v.startswith("base"):
                    cells.append(f"{results[n][v][key]:.4f}")
                else:
                    cells.append(f"{results[n][v][key] - np.mean([b[key] for b in base]):+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder for the data sets and work folders")
    parser.add_argument("--datasets", default="demo0,demo1:1500:600:250,synth0:0.01")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--base-set", action="append", default=[], help="more overrides for every run")
    parser.add_argument("--out", type=Path, help="JSON file of the results (updated after every variant)")
    parser.add_argument("--markdown", action="store_true", help="print the tables of --out and exit")
    args = parser.parse_args()
    results: dict = read_json(args.out) if args.out and args.out.is_file() else {}
    if args.markdown:
        print(markdown(results, "src") + "\n\n" + markdown(results, "mae"))
        return 0
    for name in args.datasets.split(","):
        common, labels = prepare(name, args.root, BASE + args.base_set)
        for variant in args.variants.split(","):
            if variant in results.get(name, {}):
                continue  # resumable: a finished variant is kept
            results.setdefault(name, {})[variant] = evaluate(common, VARIANTS[variant], labels, args.root / name)
            r = results[name][variant]
            print(f"{name:24s} {variant:10s} val SRC {r['val_src']:.4f} MAE {r['val_mae']:.4f} | "
                  f"test SRC {r['test_src']:.4f} MAE {r['test_mae']:.4f} | {r['seconds']:.0f} s", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
