"""End to end: `python pipeline/run_all.py` on a tiny demo set and on an SMPD-format directory."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_demo import OPTIONAL_OFF

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "demo.n_train=160", "--set", "demo.n_test=60", "--set", "demo.n_users=25",
        "--set", "demo.image_size=16", "--set", "gbdt.num_boost_round=60", *OPTIONAL_OFF]


def run_all(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "pipeline" / "run_all.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    args = ["--work-dir", str(tmp / "work"), "--submissions-dir", str(tmp / "subs"), "--run-name", "first", *TINY]
    result = run_all(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, args, result


def test_demo_run_writes_a_valid_submission_and_a_leaderboard_row(demo_run):
    tmp, _, _ = demo_run
    run_dir = tmp / "subs" / "first"
    test_pids = [str(r["Pid"]) for r in json.loads((tmp / "work" / "data" / "test_category.json").read_text())]
    sub = pd.read_csv(run_dir / "submission.csv", dtype={"post_id": str})
    assert sub["post_id"].tolist() == [f"post{p}" for p in test_pids]
    assert np.isfinite(sub["popularity_score"]).all()
    body = json.loads((run_dir / "submission.json").read_text())
    assert [r["post_id"] for r in body["result"]] == sub["post_id"].tolist()
    board = pd.read_csv(tmp / "subs" / "leaderboard.csv")
    assert board["run"].tolist() == ["first"]
    assert 0.0 < board["val_src"][0] <= 1.0 and np.isfinite(board["test_mae"][0])
    # the hidden test labels stay outside the data directory the pipeline reads
    assert (tmp / "work" / "hidden_test_labels.txt").is_file()
    assert not list((tmp / "work" / "data").glob("*label*test*")) and not (tmp / "work" / "data" / "test_label.txt").exists()


def test_rerun_skips_finished_stages_and_force_reruns(demo_run):
    tmp, args, _ = demo_run
    again = run_all(*[a if a != "first" else "second" for a in args])
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("make_demo", "read_data", "make_folds", "build_metadata", "train_gbdt", "blend"):
        assert f"[{stage}] up to date, skipped" in again.stderr
    assert "[submit] running" in again.stderr  # a new run name gets its own submission
    forced = run_all(*[a if a != "first" else "third" for a in args], "--stages", "make_folds", "--force")
    assert "[make_folds] running" in forced.stderr and "[read_data]" not in forced.stderr
    first = (tmp / "subs" / "first" / "submission.csv").read_bytes()
    assert (tmp / "subs" / "second" / "submission.csv").read_bytes() == first


def test_a_changed_config_section_reruns_only_what_depends_on_it(demo_run):
    tmp, args, _ = demo_run
    changed = run_all(*[a if a != "first" else "fourth" for a in args], "--set", "gbdt.num_boost_round=40")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "[build_metadata] up to date, skipped" in changed.stderr
    assert "[train_gbdt] running" in changed.stderr


def test_real_layout_with_every_image_missing(demo_run, tmp_path):
    tmp, _, _ = demo_run
    data = tmp_path / "smpd"
    shutil.copytree(tmp / "work" / "data", data, ignore=shutil.ignore_patterns("*.jpg"))
    result = run_all("--data-dir", str(data), "--test-labels", str(tmp / "work" / "hidden_test_labels.txt"),
                     "--work-dir", str(tmp_path / "work"), "--submissions-dir", str(tmp_path / "subs"),
                     "--run-name", "noimg", "--config", str(ROOT / "configs" / "demo.yaml"), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image file missing" in result.stderr
    board = pd.read_csv(tmp_path / "subs" / "leaderboard.csv")
    assert np.isfinite(board["test_src"][0])


def test_bad_input_fails_with_a_message_and_nonzero_exit(tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    result = run_all("--data-dir", str(data), "--work-dir", str(tmp_path / "w"),
                     "--submissions-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert "missing file(s)" in result.stderr and "train_category.json" in result.stderr


def test_unknown_stage_and_bad_override_are_refused(tmp_path):
    assert run_all("--stages", "nosuchstage").returncode == 2
    result = run_all("--set", "gbdt.no_such_key=1", "--work-dir", str(tmp_path))
    assert result.returncode == 2 and "unknown key 'no_such_key'" in result.stderr
