#!/usr/bin/env python
"""The first run as a new user gets it: a fresh clone, `python pipeline/run_all.py`, every stage on.

    python benchmarks/bench_first_run.py                    # clone HEAD, run the demo, then the encoder benchmarks
    python benchmarks/bench_first_run.py --no-encoders      # the first run only
    python benchmarks/bench_first_run.py --keep /tmp/first  # keep the clone (work/ and submissions/) there

The clone is `git clone` of this repository's committed HEAD into a temporary folder (uncommitted
changes are not in it); the run uses this Python (the venv the benchmark runs in), so package
installation is not timed. Reported: the end-to-end wall time, each stage's seconds from
the lock files under `work/`, the validation and hidden-test scores from the run's `scores.json`, the
demo's size from `configs/demo.yaml`, and the load average before and after (on a shared machine the
wall time is an upper bound: compare runs at similar load). Then `bench_text.py` and `bench_encode.py`
(fp32) give the text and image encoders against their plain one-at-a-time loops. One JSON line.
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
RUN_NAME = "first-run"


def first_run(clone: Path, timeout_s: float) -> dict:
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(clone / "first_run.log", "w") as log:
        # the clone's own code, not the installed checkout's (the project installs itself editable)
        proc = subprocess.run([sys.executable, "pipeline/run_all.py", "--run-name", RUN_NAME], cwd=clone,
                              stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
                              env={**os.environ, "PYTHONPATH": str(clone)})
    wall = time.perf_counter() - started
    result = {"commit": commit, "returncode": proc.returncode, "wall_s": round(wall, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    if proc.returncode:
        result["log_tail"] = (clone / "first_run.log").read_text()[-3000:]
        return result
    # the data set's shared lock (work/demo-<d>/) and the config folder's (work/demo-<d>/config-<d>/)
    work = clone / "work"
    locks = sorted(work.glob("*/stages.lock.json")) + sorted(work.glob("*/config-*/stages.lock.json"))
    result["stage_seconds"] = {name: entry["seconds"] for lock in locks
                               for name, entry in json.loads(lock.read_text())["stages"].items()}
    scores = json.loads((clone / "submissions" / RUN_NAME / "scores.json").read_text())
    result["validation"] = scores.get("validation")
    result["test"] = scores.get("test")
    import yaml
    demo = yaml.safe_load((clone / "configs" / "demo.yaml").read_text())
    result["demo_config"] = {"n_train": demo["demo"]["n_train"], "n_test": demo["demo"]["n_test"],
                             "folds": demo["validation"]["n_folds"], "prototype_epochs": demo["prototype"]["train"]["epochs"],
                             "prototype_batch_size": demo["prototype"]["train"].get("batch_size"),
                             "trials": demo["tuning"]["n_trials"], "seeds": demo["gbdt"]["seeds"],
                             "image_resolution": demo["encoders"]["image_resolution"]}
    return result


def benchmark(script: str, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / script), *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-encoders", action="store_true", help="skip the text and image encoder benchmarks")
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    parser.add_argument("--timeout-s", type=float, default=3600)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_first_run_") as scratch:
        clone = args.keep or Path(scratch) / "smp-pipeline"
        result = {"first_run": first_run(clone, args.timeout_s), "cpu_count": os.cpu_count()}
        if not args.no_encoders:
            result["text"] = benchmark("bench_text.py", ["--repeats", "1"])
            result["image"] = benchmark("bench_encode.py", ["--precisions", "fp32"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
