import json

import numpy as np
import pytest

from reporting.submission_format import SubmissionError, check_submission, read_submission_csv, submission_csv, submission_json

PIDS = np.array(["11", "7", "300"])


def test_valid_submission_round_trips():
    scores = np.array([1.5, 7.25, 3.0])
    check_submission(PIDS, PIDS, scores)
    frame = read_submission_csv(submission_csv(PIDS, scores))
    assert frame["post_id"].tolist() == ["post11", "post7", "post300"]
    assert np.allclose(frame["popularity_score"], scores)
    body = json.loads(submission_json(PIDS, scores))
    assert body["version"] == "VERSION 1.2"
    assert [r["post_id"] for r in body["result"]] == ["post11", "post7", "post300"]


@pytest.mark.parametrize("pids, scores, message", [
    (np.array(["11", "7"]), np.array([1.0, 2.0]), "2 predictions for 3"),
    (np.array(["11", "300", "7"]), np.array([1.0, 2.0, 3.0]), "row 1"),
    (np.array(["11", "11", "300"]), np.array([1.0, 2.0, 3.0]), "more than once"),
    (PIDS, np.array([1.0, np.inf, 3.0]), "non-finite"),
])
def test_bad_submissions_are_refused(pids, scores, message):
    with pytest.raises(SubmissionError, match=message):
        check_submission(PIDS, pids, scores)


APPENDER = r"""
import sys, time
from pathlib import Path
from reporting.submission_format import add_leaderboard_row
board, name, start = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
while not start.exists():  # every process appends at the same moment
    time.sleep(0.01)
for i in range(int(sys.argv[5])):
    add_leaderboard_row(board, {"run": f"{name}-{i}", "dataset": "demo", "val_src": 0.5})
"""


def test_concurrent_submits_keep_every_leaderboard_row(tmp_path):
    """Several processes appending to one leaderboard at once (read, append, rename): no row lost."""
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    root = str(Path(__file__).resolve().parent.parent)
    board, start = tmp_path / "leaderboard.csv", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, root, str(board), f"p{k}", str(start), "20"], cwd=root)
             for k in range(4)]
    start.touch()
    assert all(p.wait(timeout=300) == 0 for p in procs)
    rows = pd.read_csv(board, dtype=str)
    assert sorted(rows["run"]) == sorted(f"p{k}-{i}" for k in range(4) for i in range(20))
    # each process's rows stay in the order it appended them
    for k in range(4):
        mine = [r for r in rows["run"] if r.startswith(f"p{k}-")]
        assert mine == [f"p{k}-{i}" for i in range(20)]
