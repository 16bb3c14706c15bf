#!/usr/bin/env python
"""The tune stage with one shared study (tuning.per_member=false) and a study per member (true), side by side.

    python benchmarks/bench_tune_per_member.py --data-dir work/panel/data/demo-s0/data \\
        --work-dir work/panel/work/full/demo-s0 --repeats 2 --set encoders.num_workers=0 ...

Runs `pipeline/run_all.py --config configs/demo.yaml --stages tune --force` on a work folder whose
earlier stages are done (e.g. a panel run's, with the panel's --set overrides so that the same config
folder is used), alternating off, on, off, on, ... so that both see the same machine load, each time
on a fresh SQLite study (tuning.storage is an execution setting: the config folder stays the same).
Prints the stage's seconds (from the config folder's lock file), the trials and the summed trial
seconds per member, and the ratio of the mean stage times; one JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_tune(run_args: list[str], per_member: bool, storage: Path) -> dict:
    from pipeline.catalog import make_context
    from pipeline.run_all import parse_args
    args = [*run_args, "--set", f"tuning.per_member={str(per_member).lower()}",
            "--set", f"tuning.storage=sqlite:///{storage}"]
    done = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline" / "run_all.py"), *args,
                           "--stages", "tune", "--force"], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tune stage failed:\n{done.stderr[-3000:]}")
    config_dir = make_context(parse_args(args)).config_dir
    seconds = json.loads((config_dir / "stages.lock.json").read_text())["stages"]["tune"]["seconds"]
    summary = json.loads((config_dir / "tuning" / "study_summary.json").read_text())
    members = summary.get("members") or {summary["feature_set"]: {
        "n_trials": summary["n_trials"], "trial_seconds_total": summary["trial_seconds_total"],
        "best_value": summary["best_value"]}}
    return {"per_member": per_member, "stage_s": seconds,
            "members": {m: {k: v[k] for k in ("n_trials", "trial_seconds_total", "best_value")}
                        for m, v in members.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    run_args = ["--config", str(REPO_ROOT / "configs" / "demo.yaml"), "--data-dir", str(args.data_dir),
                "--work-dir", str(args.work_dir), *sum((["--set", o] for o in args.overrides), [])]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for per_member in (False, True):
                run = run_tune(run_args, per_member, Path(tmp) / f"study-{i}-{per_member}.db")
                runs.append(run)
                print(f"per_member={str(per_member).lower()}: tune stage {run['stage_s']:.1f} s; " + "; ".join(
                    f"{m} {v['n_trials']} trials {v['trial_seconds_total']:.1f} s best {v['best_value']:.4f}"
                    for m, v in run["members"].items()), flush=True)
    mean = {p: sum(r["stage_s"] for r in runs if r["per_member"] == p) / args.repeats for p in (False, True)}
    print(f"mean tune stage: off {mean[False]:.1f} s, on {mean[True]:.1f} s, on/off {mean[True] / mean[False]:.2f}")
    print(json.dumps({"runs": runs, "ratio_on_off": round(mean[True] / mean[False], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
