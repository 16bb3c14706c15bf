#!/usr/bin/env python
"""The tune stage on the demo with 1 and with N worker processes sharing one study in a database server.

    createdb -h 127.0.0.1 -U postgres smp_tuning        # once: a database for the studies
    python benchmarks/bench_tuning_workers.py --storage postgresql://postgres@127.0.0.1:5432/smp_tuning
    python benchmarks/bench_tuning_workers.py --storage ... --workers 1,2,3 --trials 30 --repeats 2

The demo's data, folds and metadata are built once (encoders and prototype off: the tuned feature
set is `meta`); then each worker count runs `pipeline/run_all.py --stages tune --force` on a study
of its own (fresh name), in the order 1, N, 1, N, ... so that both see the same machine load. Per
run: wall seconds of the stage, CPU seconds of its processes, the trials each worker ran, the best
validation score, and the load average before and after (the machine may be shared). Prints a table
and one JSON line; the studies are deleted afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

from models.tuning import redact  # noqa: E402

# the tuned feature set is `meta`: the stages it needs, and nothing slow
SETUP = ["--set", "encoders.enabled=false", "--set", "prototype.enabled=false", "--set", "tuning.enabled=true"]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_all(args: list[str], env: dict) -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"error: run_all.py {' '.join(args)} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, help="RDB URL every worker reaches, e.g. postgresql://user@host/db")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--trials", type=int, default=30, help="tuning.n_trials")
    parser.add_argument("--repeats", type=int, default=1, help="runs per worker count, interleaved")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "work" / "bench_tuning_workers")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config override for every run")
    parser.add_argument("--keep", action="store_true", help="keep the studies in the storage")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",")]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    common = ["--work-dir", str(args.work_dir), "--submissions-dir", str(args.work_dir / "submissions"),
              "--run-name", "bench", *SETUP, *sum((["--set", o] for o in args.overrides), [])]
    run_all([*common, "--stages", "make_demo,read_data,make_folds,build_metadata"], env)

    import optuna
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rows, studies = [], []
    for repeat in range(args.repeats):
        for workers in counts:
            study_name = f"bench-{stamp}-r{repeat}-w{workers}"
            load_before = os.getloadavg()[0]
            cpu_before, started = children_cpu_seconds(), time.perf_counter()
            run_all([*common, "--stages", "tune", "--force", "--set", f"tuning.storage={args.storage}",
                     "--set", f"tuning.workers={workers}", "--set", f"tuning.n_trials={args.trials}",
                     "--set", f"tuning.study_name={study_name}"], env)
            wall = time.perf_counter() - started
            summary = json.loads((args.work_dir / "tuning" / "study_summary.json").read_text())
            studies.append(summary["study_name"])
            by_worker: dict[str, int] = {}
            for trial in summary["trials"]:
                by_worker[str(trial["worker"])] = by_worker.get(str(trial["worker"]), 0) + 1
            rows.append({"workers": workers, "repeat": repeat, "wall_s": round(wall, 1),
                         "tuning_s": summary["tuning_seconds"],
                         "cpu_s": round(children_cpu_seconds() - cpu_before, 1),
                         "trials": summary["counts"], "by_worker": by_worker,
                         "best_value": round(summary["best_value"], 5), "best_trial": summary["best_trial"],
                         "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1)})
            print(f"{workers} worker(s), repeat {repeat}: tune stage {wall:.1f} s wall", file=sys.stderr)
    if not args.keep:
        for name in studies:
            optuna.delete_study(study_name=name, storage=args.storage)

    print(f"storage {redact(args.storage)}; {args.trials} trials; {os.cpu_count()} CPUs")
    print(f"{'workers':>7} {'repeat':>6} {'wall s':>7} {'tuning s':>8} {'CPU s':>6} {'load':>11} "
          f"{'best':>7} {'best trial':>10}  trials per worker")
    for r in rows:
        print(f"{r['workers']:>7} {r['repeat']:>6} {r['wall_s']:>7} {r['tuning_s']:>8} {r['cpu_s']:>6} "
              f"{r['load_before']:>5}-{r['load_after']:<5} {r['best_value']:>7} {r['best_trial']:>10}  {r['by_worker']}")
    base = [r["tuning_s"] for r in rows if r["workers"] == counts[0]]
    speedups = {w: round(sum(base) / sum(r["tuning_s"] for r in rows if r["workers"] == w), 2) for w in counts[1:]}
    for w, s in speedups.items():
        print(f"tuning time, {counts[0]} worker(s) / {w} workers: {s}x")
    print(json.dumps({"storage": redact(args.storage), "trials": args.trials, "cpus": os.cpu_count(), "runs": rows,
                      "speedup": speedups}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
