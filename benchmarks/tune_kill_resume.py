"""A tune killed mid-trial, then rerun, against an uninterrupted run: the same submission? (issue 24 item 3)

Two run_all.py runs of the demo (1500 train posts, tuning on, 6 trials, optional stages off): one whole; one
SIGKILLed while the whole run's best trial is RUNNING (polled in the SQLite study), then rerun. Prints each submission's digest,
the rerun's seconds and its resume log lines.

    PYTHONPATH=. nice -n 10 python benchmarks/tune_kill_resume.py --base /tmp/tkr [--root CHECKOUT]
"""
import argparse
import hashlib
import json
import os
import runpy
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--base", type=Path, required=True, help="an empty folder for the two runs")
parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the checkout to run")
parser.add_argument("--kill-at", type=int, default=None,
                    help="the trial that is running when the run is killed (default: the uninterrupted run's best)")
args = parser.parse_args()
ROOT, base = args.root.resolve(), args.base
# the tests' tiny-demo settings, read from their file (tests/ is not a package)
_tiny = runpy.run_path(str(ROOT / "tests" / "tiny_demo.py"))
OPTIONAL_OFF, TINY_DEMO = _tiny["OPTIONAL_OFF"], _tiny["TINY_DEMO"]

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
ARGS = [*TINY_DEMO, *OPTIONAL_OFF, "--set", "demo.n_train=1500", "--set", "tuning.enabled=true",
        "--set", "tuning.n_trials=6", "--set", "tuning.adapt_to_size=false", "--set", "gbdt.num_threads=1",
        "--set", "gbdt.num_boost_round=600", "--set", "gbdt.early_stopping_rounds=600",
        "--set", "tuning.startup_trials=3"]


def command(name):
    return [sys.executable, str(ROOT / "pipeline" / "run_all.py"), "--work-dir", str(base / name),
            "--submissions-dir", str(base / "subs" / name), "--run-name", "r", *ARGS]


def digest(name):
    return hashlib.sha256((base / "subs" / name / "r" / "submission.csv").read_bytes()).hexdigest()[:12]


def running(db, number):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT 1 FROM trials WHERE number = ? AND state = 'RUNNING'", (number,)).fetchone()
    except sqlite3.Error:  # not created yet
        return None


started = time.time()
done = subprocess.run(command("whole"), cwd=ROOT, env=ENV, capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-2000:]
best = json.loads(next((base / "whole").glob("config-*/tuning/best_params.json")).read_text())
kill_at = best["trial"] if args.kill_at is None else args.kill_at
print(f"uninterrupted: {time.time() - started:.0f} s, submission {digest('whole')}, best trial {best['trial']} "
      f"{best['params']}", flush=True)
proc = subprocess.Popen(command("killed"), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
db = base / "killed" / "tuning" / "study.db"
while proc.poll() is None and not running(db, kill_at):
    time.sleep(0.02)
killed = proc.poll() is None
proc.send_signal(signal.SIGKILL)
proc.wait()
print(f"killed while trial {kill_at} ran: {killed}", flush=True)
started = time.time()
done = subprocess.run(command("killed"), cwd=ROOT, env=ENV, capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-2000:]
lines = [line for line in done.stderr.splitlines() if "left running" in line or "waiting for" in line]
best = json.loads(next((base / "killed").glob("config-*/tuning/best_params.json")).read_text())
print(f"rerun: {time.time() - started:.0f} s, submission {digest('killed')}, best trial {best['trial']} "
      f"{best['params']}; resume lines: {lines}")
