#!/usr/bin/env python
"""What early stopping on the challenge score (gbdt.stop_metric=challenge) costs and changes, against l2.

    python benchmarks/bench_stop_metric.py                      # two sizes, 3 repeats each
    python benchmarks/bench_stop_metric.py --sizes 3000 --repeats 5

On a synthetic frame shaped like a time holdout (features, a label with a nonlinear part and noise; the
validation part a later period whose level moved, as SMPD's test period has a lower mean label):
- cost: the seconds per boosting round of a fit that evaluates l2 every round and of one that evaluates
  the challenge score every round (no stop: `rounds` rounds each), run alternately, as a ratio;
- choice: with early stopping (patience 100), the round each stop metric keeps and the SRC, MAE and
  challenge score of that model on the selection part it stopped on and on a report part it never saw.
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle LightGBM threads must not spin on a busy machine

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from models.gbdt import LightGBMRegressor  # noqa: E402
from models.metrics import challenge_score, mae, src  # noqa: E402

PARAMS = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0}


def frame(n: int, n_features: int = 40, seed: int = 0):
    """n posts: the first 80% fit, then a selection part and a report part of 10% each (later, shifted)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, n_features)), columns=[f"f{j}" for j in range(n_features)])
    y = (1.5 * X["f0"] + np.sin(2 * X["f1"]) + 0.5 * X["f2"] * X["f3"] + 0.3 * (X["f4"] > 1)
         + rng.normal(0, 1.0, n)).to_numpy() + 6.0
    n_fit, n_sel = int(0.8 * n), int(0.1 * n)
    y[n_fit:] -= 0.8  # the later period's level moved
    parts = {"fit": slice(0, n_fit), "selection": slice(n_fit, n_fit + n_sel), "report": slice(n_fit + n_sel, n)}
    return {k: (X.iloc[s].reset_index(drop=True), y[s]) for k, s in parts.items()}


def per_round_seconds(data, metric: str, rounds: int) -> float:
    (X, y), (Xv, yv) = data["fit"], data["selection"]
    started = time.perf_counter()
    LightGBMRegressor(PARAMS, rounds, rounds, 2, 0, stop_metric=metric).fit(X, y, Xv, yv)  # patience = rounds: no stop
    return (time.perf_counter() - started) / rounds


def choice(data, metric: str) -> dict:
    (X, y), (Xv, yv), (Xr, yr) = data["fit"], data["selection"], data["report"]
    model = LightGBMRegressor(PARAMS, 3000, 100, 2, 0, stop_metric=metric).fit(X, y, Xv, yv)
    out = {"rounds": model.best_iteration_}
    for part, (Xp, yp) in (("selection", (Xv, yv)), ("report", (Xr, yr))):
        pred = model.predict(Xp)
        out[part] = {"src": round(src(yp, pred), 4), "mae": round(mae(yp, pred), 4),
                     "challenge": round(challenge_score(yp, pred), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3000,30000", help="comma-separated post counts")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed fits per metric")
    parser.add_argument("--rounds", type=int, default=200, help="boosting rounds of a timed fit")
    parser.add_argument("--seeds", default="0,1,2", help="data seeds of the choice part")
    args = parser.parse_args(argv)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        data = frame(n)
        times = {"l2": [], "challenge": []}
        for _ in range(args.repeats):  # alternating: load on the machine falls on both alike
            for metric in times:
                times[metric].append(per_round_seconds(data, metric, args.rounds))
        row = {"n": n, "selection_posts": len(data["selection"][1]),
               "ms_per_round": {m: round(1000 * float(np.median(t)), 3) for m, t in times.items()}}
        row["time_ratio"] = round(float(np.median(times["challenge"]) / np.median(times["l2"])), 3)
        row["choices"] = {seed: {m: choice(frame(n, seed=seed), m) for m in times}
                          for seed in (int(s) for s in args.seeds.split(","))}
        results.append(row)
        print(f"n={n} ({row['selection_posts']} selection posts): ms/round l2 {row['ms_per_round']['l2']} "
              f"challenge {row['ms_per_round']['challenge']}, ratio {row['time_ratio']}")
        for seed, by in row["choices"].items():
            for metric, c in by.items():
                print(f"  seed {seed} {metric:9s} rounds {c['rounds']:5d} | selection SRC {c['selection']['src']:.4f} "
                      f"MAE {c['selection']['mae']:.4f} ch {c['selection']['challenge']:.4f} | report SRC "
                      f"{c['report']['src']:.4f} MAE {c['report']['mae']:.4f} ch {c['report']['challenge']:.4f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
