#!/usr/bin/env python
"""Time of the CatBoost member against the LightGBM member on the same features, side by side.

    python benchmarks/bench_catboost.py --root /tmp/cbbench --fractions 0.01,0.05

Per size a synthetic SMPD (benchmarks/synth_smpd.py) goes through read_data, make_folds and
build_metadata; then the LightGBM `meta` member (configs/smpd.yaml parameters, one seed) and the
CatBoost member on the same blocks are cross-fit in this process, alternately, `--repeats` times;
the ratio of their best times is what carries over to another machine.
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

from benchmarks.synth_smpd import make_synthetic_smpd  # noqa: E402
from models.cv import cross_fit  # noqa: E402
from pipeline import run_all  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.catalog import RunContext  # noqa: E402
from pipeline.members import catboost_factory, lightgbm_factory, load_member_data  # noqa: E402

OVERRIDES = ["encoders.enabled=false", "prototype.enabled=false", "tuning.enabled=false", "gbdt.seeds=[0]",
             "users.text_dims=0", "users.mix=false", "gbdt.num_threads=2"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--fractions", default="0.01,0.05")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    config_path = REPO_ROOT / "configs" / "smpd.yaml"
    out = {}
    for fraction in [float(f) for f in args.fractions.split(",")]:
        data, work = args.root / f"f{fraction}" / "data", args.root / f"f{fraction}" / "work"
        if not (data / "train_label.txt").is_file():
            make_synthetic_smpd(data, fraction, seed=0)
        sets = [a for o in OVERRIDES for a in ("--set", o)]
        if run_all.main(["--data-dir", str(data), "--work-dir", str(work), "--config", str(config_path), *sets,
                         "--stages", "read_data,make_folds,build_metadata"]) != 0:
            raise SystemExit("preparing the data set failed")
        cfg = load_config(config_path, OVERRIDES)
        ctx = RunContext(config=cfg, data_dir=data, config_dir=work, run_name="bench")
        X, X_test, y, folds, stats, posts = load_member_data(ctx, ["meta"])
        Xc = X.assign(**{f"cat_{k}": posts["train"][k].to_numpy() for k in cfg.catboost.cat_features})
        Xc_test = X_test.assign(**{f"cat_{k}": posts["test"][k].to_numpy() for k in cfg.catboost.cat_features})
        times: dict[str, list[float]] = {"lightgbm": [], "catboost": []}
        scores = {}
        for _ in range(args.repeats):
            for name, factory, features, features_test in (("lightgbm", lightgbm_factory(cfg), X, X_test),
                                                           ("catboost", catboost_factory(cfg), Xc, Xc_test)):
                started = time.perf_counter()
                result = cross_fit(factory, features, y, folds, features_test, seeds=[0], target_stats=stats,
                                   progress=False, name=name)
                times[name].append(time.perf_counter() - started)
                scores[name] = result.score
        best = {k: min(v) for k, v in times.items()}
        out[str(fraction)] = {"n_train": len(y), "seconds": best, "ratio": best["catboost"] / best["lightgbm"],
                              "val": scores}
        print(json.dumps({fraction: out[str(fraction)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
