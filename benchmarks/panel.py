#!/usr/bin/env python
"""The panel: every modelling change is judged on these data sets, against the reference model.

    python benchmarks/panel.py --quick                # metadata only, small budgets (docs/results.md table)
    python benchmarks/panel.py                        # offline encoders, a cheap prototype network
    python benchmarks/panel.py --quick --label old --set validation.min_holdout_posts=0   # a variant
    python benchmarks/panel.py --quick --only small-200-u20,demo-s0

Data sets (generated on first use under --root, then reused):
- `demo-s0..2`: the built-in demo (3,000 train / 1,000 test posts, 400 users) with seeds 0, 1, 2;
  their spread is the seed-to-seed noise the rule below measures against;
- `synth-0.005`: `benchmarks/synth_smpd.py` at 0.5% of the real size (1,528 / 903 posts; no images);
- `small-*`: demo-generated small data sets of 100 to 500 train posts with different users-per-post
  mixes (a few heavy users, the issue's 200 posts of 20 users, mostly one post per user, ...).

For each, the pipeline runs (`pipeline/run_all.py --config configs/demo.yaml --data-dir ...`, its
default config plus the mode's budget overrides and your --set), then the reference model
(`benchmarks/reference.py`: plain LightGBM, unsmoothed out-of-fold user means, fixed parameters, the
same metadata features) on the same work folder. Both are scored on the hidden test labels, over
all test posts and split by posts of users seen in train / unseen. Writes <out>/panel.json and
<out>/panel.md; with --baseline PANEL.json, also each data set's change against that run.

The rule: a change stays on by default only if it helps on most of the panel and hurts none by
more than its seed-to-seed noise (the spread over the demo seeds, printed at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.reference import reference_for_work_dir  # noqa: E402
from features.smpd import read_labels  # noqa: E402
from models.metrics import score_by_kind  # noqa: E402


@dataclass(frozen=True)
class PanelSet:
    name: str
    kind: str          # "demo" (features.demo) or "synth" (benchmarks/synth_smpd.py)
    n_train: int = 0
    n_test: int = 0
    n_users: int = 0
    seed: int = 0
    fraction: float = 0.0
    note: str = ""


PANEL = [
    PanelSet("demo-s0", "demo", 3000, 1000, 400, 0, note="the demo"),
    PanelSet("demo-s1", "demo", 3000, 1000, 400, 1, note="the demo, seed 1"),
    PanelSet("demo-s2", "demo", 3000, 1000, 400, 2, note="the demo, seed 2"),
    PanelSet("synth-0.005", "synth", fraction=0.005, seed=0, note="synth_smpd.py at 0.5% size"),
    PanelSet("small-100-u10", "demo", 100, 40, 10, 11, note="a few heavy users"),
    PanelSet("small-200-u20", "demo", 200, 80, 20, 12, note="the issue's shape: 200 posts of 20 users"),
    PanelSet("small-300-u60", "demo", 300, 100, 60, 13, note="about 5 posts a user"),
    PanelSet("small-400-u400", "demo", 400, 150, 400, 14, note="mostly one post a user"),
    PanelSet("small-500-u50", "demo", 500, 200, 50, 15, note="about 10 posts a user"),
    PanelSet("small-250-u150", "demo", 250, 100, 150, 16, note="1 to 2 posts a user"),
]

# what each mode changes from configs/demo.yaml (the 2-core machine cannot afford the full budgets ten times)
QUICK = ["encoders.enabled=false", "tuning.n_trials=10"]
FULL = ["encoders.num_workers=0", "prototype.train.epochs=1", "prototype.model.width=64", "prototype.model.use_prompts_global=false",
        "prototype.model.use_prompts_local=false", "tuning.n_trials=15"]
IMAGE_SIZE = 32  # the demo's generated photos: small, they only need to carry colour, brightness and sharpness


def make_set(spec: PanelSet, root: Path) -> tuple[Path, Path]:
    """The data folder and hidden test-label file of a panel data set (generated once)."""
    folder = root / spec.name
    data_dir, labels = folder / "data", folder / "hidden_test_labels.txt"
    if labels.is_file():
        return data_dir, labels
    if spec.kind == "demo":
        from features.demo import make_demo
        make_demo(data_dir, labels, n_train=spec.n_train, n_test=spec.n_test, n_users=spec.n_users,
                  image_size=IMAGE_SIZE, seed=spec.seed)
    else:
        from benchmarks.synth_smpd import make_synthetic_smpd
        from common.io import write_text
        info = make_synthetic_smpd(data_dir, spec.fraction, spec.seed)
        write_text(labels, "".join(f"{v:.2f}\n" for v in info["test_labels"]))
    return data_dir, labels


def run_pipeline(spec: PanelSet, data_dir: Path, work_dir: Path, subs: Path, run_name: str,
                 overrides: list[str]) -> float:
    args = [sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), "--config", str(REPO_ROOT / "configs" / "demo.yaml"),
            "--data-dir", str(data_dir), "--work-dir", str(work_dir), "--submissions-dir", str(subs),
            "--test-labels", str(data_dir.parent / "hidden_test_labels.txt"), "--run-name", run_name,
            *sum((["--set", o] for o in overrides), [])]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pipeline on {spec.name} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _flat(prefix: str, scores: dict) -> dict:
    out = {}
    for part in ("all", "seen", "unseen"):
        for metric in ("src", "mae"):
            value = (scores.get(part) or {}).get(metric)
            out[f"{prefix}_{metric}" + ("" if part == "all" else f"_{part}")] = None if value is None else round(value, 4)
    return out


def run_config_folder(work_dir: Path, run_dir: Path) -> Path:
    """The config folder (config-<digest>) of the run in `run_dir`: variants of one data set share its
    work folder, each with a config folder of its own, named by the digest of the run's config."""
    from pipeline.config import load_config
    folder = work_dir / f"config-{load_config(run_dir / 'config.yaml').work_digest()}"
    if not (folder / "preds" / "final.parquet").is_file():
        raise FileNotFoundError(f"{folder}/preds/final.parquet is missing: did the pipeline run {run_dir.name} finish?")
    return folder


def evaluate(spec: PanelSet, work_dir: Path, labels_path: Path, run_dir: Path) -> dict:
    posts_test = pd.read_parquet(work_dir / "posts_test.parquet", columns=["Pid"])
    y = read_labels(labels_path, len(posts_test))
    folder = run_config_folder(work_dir, run_dir)
    final = pd.read_parquet(folder / "preds" / "final.parquet")
    test = final[final["split"] == "test"]
    if not np.array_equal(test["Pid"].astype(str).to_numpy(), posts_test["Pid"].astype(str).to_numpy()):
        raise ValueError(f"{folder}/preds/final.parquet does not list the test posts in order")
    ref_pred, seen = reference_for_work_dir(folder)
    pipe = score_by_kind(y, test["pred"].to_numpy(dtype=np.float64), seen)
    ref = score_by_kind(y, ref_pred, seen)
    row = {"data set": spec.name, "n_train": int((final["split"] == "train").sum()), "n_test": len(y),
           "test_unseen_share": round(pipe["unseen_share"], 3), **_flat("pipe", pipe), **_flat("ref", ref)}
    scores_path = run_dir / "scores.json"
    if scores_path.is_file():
        scores = json.loads(scores_path.read_text())
        row["scheme"] = scores.get("scheme")
        share = (scores.get("validation_by_kind") or {}).get("unseen_share")
        row["val_unseen_share"] = None if share is None else round(share, 3)
    return row


# --- the rule and the steering figures (pure: numbers in, numbers out) ----------------------------
METRICS = ("src", "mae")


def benefit(on: dict, off: dict) -> dict:
    """How much better the run with a switch on scores than the run with it off, per metric:
    SRC up and MAE down both count positive."""
    return {"src": on["src"] - off["src"], "mae": off["mae"] - on["mae"]}


def verdict(rows: list[dict], noise: dict) -> str:
    """The keep rule: "keep" if the switch's validation benefit is positive on most data sets (more
    than half) and on no data set below minus that set's seed-control noise, for SRC and for MAE
    alike; else "drop".

    rows: one per data set, {"data set": name, "src": benefit, "mae": benefit} (`benefit`);
    noise: data set -> {"src": n, "mae": n}, the absolute change a seed-control row made there.
    """
    if not rows:
        raise ValueError("verdict: no data set rows to judge")
    for metric in METRICS:
        gains = [float(r[metric]) for r in rows]
        if 2 * sum(g > 0 for g in gains) <= len(gains):
            return "drop"
        if any(float(r[metric]) < -float(noise[r["data set"]][metric]) for r in rows):
            return "drop"
    return "keep"


def sign_agreement(changes: list[tuple[float, float]]) -> tuple[float | None, int]:
    """(share of (validation change, test change) pairs with the same sign, pairs counted). Pairs where
    neither score moved are left out: there was nothing to steer by."""
    pairs = [(v, t) for v, t in changes if not (v == 0 and t == 0)]
    if not pairs:
        return None, 0
    return sum(np.sign(v) == np.sign(t) for v, t in pairs) / len(pairs), len(pairs)


def rank_correlation(validation: list[float], test: list[float]) -> float | None:
    """Spearman's rank correlation of validation and test scores across runs (None: under 3 runs,
    or one of them constant)."""
    from scipy.stats import spearmanr
    if len(validation) != len(test):
        raise ValueError(f"rank correlation: {len(validation)} validation and {len(test)} test scores")
    if len(validation) < 3 or np.ptp(validation) == 0 or np.ptp(test) == 0:
        return None
    return float(spearmanr(validation, test).statistic)


def steering(scores: dict, base: str, switches: list[str]) -> dict:
    """How far the validation score can steer, over the switch rows.

    scores: row label -> data set -> {"val_src", "val_mae", "test_src", "test_mae"} (a missing data set:
    the row did not run there). Returns, per metric, the sign agreement of each switch row's change
    against `base` (validation vs test) over every (row, data set), and per data set the rank
    correlation of validation and test scores across `base` and the switch rows and the gap
    (validation minus test) of `base`.
    """
    sets = list(scores[base])
    out: dict = {"agreement": {}, "pairs": {}, "rank_correlation": {}, "gap": {}}
    for metric in METRICS:
        changes = [(scores[row][s][f"val_{metric}"] - scores[base][s][f"val_{metric}"],
                    scores[row][s][f"test_{metric}"] - scores[base][s][f"test_{metric}"])
                   for row in switches for s in sets if s in scores[row]]
        out["agreement"][metric], out["pairs"][metric] = sign_agreement(changes)
    for s in sets:
        rows = [r for r in [base, *switches] if s in scores[r]]
        out["rank_correlation"][s] = {m: rank_correlation([scores[r][s][f"val_{m}"] for r in rows],
                                                          [scores[r][s][f"test_{m}"] for r in rows]) for m in METRICS}
        out["gap"][s] = {m: scores[base][s][f"val_{m}"] - scores[base][s][f"test_{m}"] for m in METRICS}
    return out


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


TABLE = ["data set", "n_train", "test_unseen_share", "val_unseen_share", "scheme", "pipe_src", "ref_src",
         "pipe_mae", "ref_mae", "pipe_src_seen", "ref_src_seen", "pipe_src_unseen", "ref_src_unseen",
         "pipe_mae_seen", "ref_mae_seen", "pipe_mae_unseen", "ref_mae_unseen"]


def summary_lines(rows: list[dict]) -> list[str]:
    lines = []
    demo = [r for r in rows if r["data set"].startswith("demo-s")]
    if len(demo) >= 2:
        for m in ("src", "mae"):
            lines.append(f"seed-to-seed noise (std over {len(demo)} demo seeds) of the pipeline's test {m.upper()}: "
                         f"{np.std([r[f'pipe_{m}'] for r in demo], ddof=1):.4f}")
    wins_src = sum(r["pipe_src"] >= r["ref_src"] for r in rows)
    wins_mae = sum(r["pipe_mae"] <= r["ref_mae"] for r in rows)
    lines.append(f"pipeline at least as good as the reference: SRC on {wins_src}/{len(rows)}, "
                 f"MAE on {wins_mae}/{len(rows)} data sets")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "work" / "panel", help="data sets and work folders")
    parser.add_argument("--quick", action="store_true", help="metadata only (encoders off), 10 tuning trials")
    parser.add_argument("--label", default="default", help="name of this variant (its run names and output folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for every pipeline run (a variant to judge)")
    parser.add_argument("--only", help="comma-separated data set names")
    parser.add_argument("--baseline", type=Path, help="a panel.json to compare against")
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/results/<mode>-<label>)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    specs = [s for s in PANEL if not args.only or s.name in args.only.split(",")]
    out = args.out or args.root / "results" / f"{mode}-{args.label}"
    out.mkdir(parents=True, exist_ok=True)
    overrides = (QUICK if args.quick else FULL) + args.overrides
    rows = []
    for spec in specs:
        data_dir, labels = make_set(spec, args.root / "data")
        work_dir = args.root / "work" / mode / spec.name
        subs = args.root / "submissions"
        run_name = f"panel-{mode}-{args.label}-{spec.name}"
        seconds = run_pipeline(spec, data_dir, work_dir, subs, run_name, overrides)
        row = {**evaluate(spec, work_dir, labels, subs / run_name), "seconds": round(seconds, 1)}
        rows.append(row)
        print(f"{spec.name}: pipeline SRC {row['pipe_src']:.4f} MAE {row['pipe_mae']:.4f} | reference SRC "
              f"{row['ref_src']:.4f} MAE {row['ref_mae']:.4f} ({seconds:.0f} s)", flush=True)
    table = markdown(rows, [c for c in TABLE if any(c in r for r in rows)])
    lines = summary_lines(rows)
    text = f"Panel ({mode}, variant {args.label}; overrides: {' '.join(overrides)})\n\n{table}\n" + "\n".join(lines) + "\n"
    if args.baseline:
        base = {r["data set"]: r for r in json.loads(args.baseline.read_text())["rows"]}
        delta = [{"data set": r["data set"], **{f"d_{k}": round(r[k] - base[r["data set"]][k], 4)
                                              for k in ("pipe_src", "pipe_mae", "pipe_src_unseen", "pipe_mae_unseen")
                                              if r.get(k) is not None and base.get(r["data set"], {}).get(k) is not None}}
                 for r in rows if r["data set"] in base]
        text += f"\nChange against {args.baseline}:\n\n" + markdown(delta, ["data set", "d_pipe_src", "d_pipe_mae",
                                                                              "d_pipe_src_unseen", "d_pipe_mae_unseen"])
    print("\n" + text)
    (out / "panel.json").write_text(json.dumps({"mode": mode, "label": args.label, "overrides": overrides,
                                                "rows": rows, "summary": lines}, indent=1))
    (out / "panel.md").write_text(text)
    print(f"wrote {out / 'panel.json'} and {out / 'panel.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
