"""The challenge's submission formats (CSV and JSON), their checks, and the leaderboard."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

JSON_VERSION = "VERSION 1.2"
LEADERBOARD_COLUMNS = ["run", "time", "commit", "config_digest", "dataset", "scheme",
                       # runs are ranked among runs of the same protocol and folds (models/validation.py)
                       "protocol", "folds_digest", "member",
                       "val_src", "val_mae", "val_mse", "test_src", "test_mae", "test_mse", "members",
                       "n_train", "n_test",
                       # by kind of post: users seen in the fit part (train, for test) or not
                       "val_unseen_share", "val_src_seen", "val_mae_seen", "val_src_unseen", "val_mae_unseen",
                       "test_unseen_share", "test_src_seen", "test_mae_seen", "test_src_unseen", "test_mae_unseen"]


class SubmissionError(ValueError):
    pass


def check_submission(test_pids: np.ndarray, pids: np.ndarray, scores: np.ndarray) -> None:
    """Every test post once, in test file order, with a finite score."""
    pids = np.asarray(pids).astype(str)
    test_pids = np.asarray(test_pids).astype(str)
    scores = np.asarray(scores, dtype=np.float64)
    if len(pids) != len(test_pids):
        raise SubmissionError(f"{len(pids)} predictions for {len(test_pids)} test posts")
    if len(scores) != len(pids):
        raise SubmissionError(f"{len(scores)} scores for {len(pids)} post ids")
    _, first, counts = np.unique(pids, return_index=True, return_counts=True)
    if (counts > 1).any():
        raise SubmissionError(f"post {pids[first[np.argmax(counts > 1)]]} is listed more than once")
    if not np.array_equal(pids, test_pids):
        row = int(np.argmax(pids != test_pids))
        raise SubmissionError(f"row {row}: post {pids[row]} where the test file has {test_pids[row]} "
                              "(the challenge scores row by row, in test file order)")
    bad = ~np.isfinite(scores)
    if bad.any():
        row = int(np.argmax(bad))
        raise SubmissionError(f"row {row}: post {pids[row]} has a non-finite score {scores[row]}")


def submission_csv(pids: np.ndarray, scores: np.ndarray) -> str:
    """`post_id,popularity_score`, scores with 6 decimals (fixed text, so runs compare byte for byte)."""
    buffer = io.StringIO()
    buffer.write("post_id,popularity_score\n")
    for pid, value in zip(np.asarray(pids).astype(str), np.asarray(scores, dtype=np.float64)):
        buffer.write(f"post{pid},{value:.6f}\n")
    return buffer.getvalue()


def submission_json(pids: np.ndarray, scores: np.ndarray, external_data: str = "") -> str:
    """The 2019-2023 JSON form: post_id is "post" + Pid."""
    result = [{"post_id": f"post{pid}", "popularity_score": round(float(v), 6)}
              for pid, v in zip(np.asarray(pids).astype(str), scores)]
    body = {"version": JSON_VERSION, "result": result,
            "external_data": {"used": "true" if external_data else "false", "details": external_data}}
    return json.dumps(body, indent=1) + "\n"


def read_submission_csv(text: str) -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(text), dtype={"post_id": str})
    if list(frame.columns) != ["post_id", "popularity_score"]:
        raise SubmissionError(f"header must be post_id,popularity_score, got {','.join(frame.columns)}")
    return frame


def append_leaderboard(board: pd.DataFrame | None, row: dict) -> pd.DataFrame:
    new = pd.DataFrame([{c: row.get(c) for c in LEADERBOARD_COLUMNS}])
    if board is None or board.empty:
        return new
    return pd.concat([board, new], ignore_index=True)
