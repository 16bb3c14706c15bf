"""Determinism: two demo runs with the same seed, in separate folders, write byte-identical submissions.

The demo config on a tiny set, with tuning, several LightGBM seeds, ridge members and
the nnls blend. Encoders and the prototype network are off here to stay fast; their own
bit-for-bit reruns are tested in test_encoders.py and test_prototype.py.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tiny_demo import config_dir

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "demo.n_train=160", "--set", "demo.n_test=60", "--set", "demo.n_users=25",
        "--set", "demo.image_size=16", "--set", "encoders.enabled=false", "--set", "prototype.enabled=false",
        "--set", "tuning.enabled=true", "--set", "tuning.n_trials=3", "--set", "tuning.timeout_s=0",
        "--set", "tuning.workers=1", "--set", "gbdt.num_boost_round=40", "--set", "gbdt.seeds=[0, 1]",
        "--set", "ensemble.linear_members={ridge_meta: [meta]}"]  # a ridge member too (off in the configs)


def demo_args(tmp: Path, name: str, run_name: str = "run", *extra: str) -> list[str]:
    from pipeline.stage import load_stages
    names = [stage.name for stage in load_stages()]
    up_to_submit = ",".join(names[:names.index("submit") + 1])  # the report stages do not touch the submission
    return ["--work-dir", str(tmp / name), "--submissions-dir", str(tmp / f"subs_{name}"), "--run-name", run_name,
            "--stages", up_to_submit, *TINY, *extra]


def run_demo(tmp: Path, name: str) -> Path:
    """A run in a process of its own (another hash seed, fresh imports), as two runs on two days would be."""
    result = subprocess.run([sys.executable, str(ROOT / "pipeline" / "run_all.py"), *demo_args(tmp, name)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / f"subs_{name}" / "run"


def test_two_runs_with_the_same_seed_are_byte_identical(tmp_path, run_all_here):
    first, second = run_demo(tmp_path, "a"), run_demo(tmp_path, "b")
    for name in ("submission.csv", "submission.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # bit for bit before the submission's rounding to 6 decimals, too, member by member
    members = sorted((config_dir(tmp_path / "a") / "preds").glob("*.parquet"))
    assert len(members) >= 3  # LightGBM, ridge, the blend
    for path in members:
        a, b = pd.read_parquet(path), pd.read_parquet(config_dir(tmp_path / "b") / "preds" / path.name)
        assert np.array_equal(a["pred"].to_numpy(), b["pred"].to_numpy(), equal_nan=True), path.name
    # the data itself is regenerated from the seed, byte for byte
    for path in sorted((tmp_path / "a" / "data").glob("*.json")):
        assert path.read_bytes() == (tmp_path / "b" / "data" / path.name).read_bytes(), path.name

    # and the test can fail: other LightGBM seeds give another submission (only the model stages rerun)
    other = run_all_here(*demo_args(tmp_path, "a", "seeds23", "--set", "gbdt.seeds=[2, 3]"))
    assert other.returncode == 0, other.stderr[-3000:]
    other = tmp_path / "subs_a" / "seeds23"
    assert (other / "submission.csv").read_bytes() != (first / "submission.csv").read_bytes()
