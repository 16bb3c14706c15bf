#!/usr/bin/env python
"""The demo three ways: untuned single LightGBM, tuned single LightGBM, tuned blend.

    python benchmarks/bench_tuning.py                 # docs/results.md figures (default demo, 30 trials)
    python benchmarks/bench_tuning.py --trials 10     # quicker

Each variant is one `pipeline/run_all.py` run on the same work folder (the demo
data, folds and features are built once), with its own run name; the tuned
variants share one Optuna study (the data set's), which starts empty (the
shared tuning folder is cleared first) so that the tuning time is measured. Prints the three
leaderboard rows, the tuning time, and the blend's level-recalibration report,
then one JSON line with the same figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "untuned": ["--set", "tuning.enabled=false", "--set", "ensemble.method=best",
                "--set", "ensemble.linear_members={}", "--set", "gbdt.seeds=[0]"],
    "tuned": ["--set", "tuning.enabled=true", "--set", "ensemble.method=best",
              "--set", "ensemble.linear_members={}", "--set", "gbdt.seeds=[0]"],
    "blend": ["--set", "tuning.enabled=true", "--set", "ensemble.method=nnls", "--set", "gbdt.seeds=[0,1,2]",
              "--set", "ensemble.recalibrate_level=true"],
}


def config_dir(run_args: list[str]) -> Path:
    """The config folder run_all.py uses for these arguments."""
    from pipeline.catalog import make_context
    from pipeline.run_all import parse_args
    return make_context(parse_args(run_args)).config_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "work" / "bench_tuning")
    parser.add_argument("--submissions-dir", type=Path, default=REPO_ROOT / "submissions")
    parser.add_argument("--trials", type=int, default=30, help="tuning.n_trials")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config override for every variant")
    args = parser.parse_args(argv)
    # LightGBM's OpenMP threads spin while waiting; on a busy machine that costs 10-50x
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    shutil.rmtree(args.work_dir / "tuning", ignore_errors=True)  # a fresh study: its time is the tuning time
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    common = ["--work-dir", str(args.work_dir), "--submissions-dir", str(args.submissions_dir),
              "--set", f"tuning.n_trials={args.trials}", *sum((["--set", o] for o in args.overrides), [])]
    runs, seconds = {}, {}
    for variant, extra in VARIANTS.items():
        runs[variant] = f"bench-{variant}-{stamp}"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), *common, *extra,
                               "--run-name", runs[variant]], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        seconds[variant] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            print(f"error: variant {variant} failed", file=sys.stderr)
            return 1
        print(f"{variant}: done in {seconds[variant]} s", file=sys.stderr)
        if variant == "tuned":  # the blend run reuses the finished study
            summary = json.loads((config_dir(common + extra) / "tuning" / "study_summary.json").read_text())
        final_preds = config_dir(common + extra) / "preds" / "final.parquet"

    board = pd.read_csv(args.submissions_dir / "leaderboard.csv")
    rows = board[board["run"].isin(runs.values())].set_index("run").loc[list(runs.values())]
    blend = json.loads((args.submissions_dir / runs["blend"] / "blend.json").read_text())
    columns = ["member", "val_src", "val_mae", "val_mse", "test_src", "test_mae", "test_mse", "members"]
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        print(rows[columns].to_string())
    print(f"\ntuning: {summary['tuning_seconds']} s for {sum(summary['counts'].values())} trials "
          f"({summary['counts']}); best validation {summary['metric']} {summary['best_value']:.4f} "
          f"(trial {summary['best_trial']}; trial 0 = the untuned parameters)")
    recal = blend.get("recalibration")
    if recal:
        print(f"level recalibration: shift {recal['shift']:+.3f}; later half of the holdout MAE "
              f"{recal['mae_later_half_before']:.4f} -> {recal['mae_later_half_after']:.4f} "
              f"(shift fit on the earlier half)")
        labels = args.work_dir / "hidden_test_labels.txt"
        if labels.is_file():  # the demo's hidden test labels: the same shift on the test period
            y = np.loadtxt(labels)
            final = pd.read_parquet(final_preds)
            pred = final.loc[final["split"] == "test", "pred"].to_numpy()
            recal["test_mae_without_shift"] = float(np.abs(y - (pred - recal["shift"])).mean())
            recal["test_mae_with_shift"] = float(np.abs(y - pred).mean())
            print(f"  on the demo's test period: MAE {recal['test_mae_without_shift']:.4f} -> "
                  f"{recal['test_mae_with_shift']:.4f}")
    print(json.dumps({"runs": {v: rows.loc[r, ["val_src", "val_mae", "val_mse", "test_src", "test_mae", "test_mse"]]
                                .astype(float).round(5).to_dict() for v, r in runs.items()},
                      "tuning_seconds": summary["tuning_seconds"], "trials": summary["counts"],
                      "variant_seconds": seconds, "blend_weights": blend["weights"], "recalibration": recal}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
