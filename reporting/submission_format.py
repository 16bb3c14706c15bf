"""The challenge's submission formats (CSV and JSON), their checks, and the leaderboard."""
from __future__ import annotations

import csv
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import file_lock, write_text

log = logging.getLogger(__name__)

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


# a text cell starting with one of these is a formula (or a command) to a spreadsheet; written with a
# leading `'` it shows as text. `'` itself is escaped too, so reading takes exactly one `'` off again
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def escape_cell(value):
    """A leaderboard cell as written: text that a spreadsheet would run gets a leading `'`;
    numbers (a negative score) stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def unescape_cell(value):
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def read_leaderboard(path: Path) -> pd.DataFrame | None:
    """The leaderboard's rows as text (None when there is none). A torn row (fewer or more cells than
    the header, as a run killed mid-write or a hand edit leaves it) is named in a warning and left out,
    never padded into a valid-looking row."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return None
    header, kept = rows[0], []
    for number, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(header):
            log.warning("%s, line %d: torn row (%d of %d cells), left out: %.80r", path, number, len(cells),
                        len(header), ",".join(cells))
            continue
        kept.append([unescape_cell(c) if c != "" else None for c in cells])
    return pd.DataFrame(kept, columns=header, dtype=object)


def write_leaderboard(board: pd.DataFrame) -> str:
    """The leaderboard as CSV text, its text cells escaped (escape_cell)."""
    buffer = io.StringIO()
    board.map(escape_cell).to_csv(buffer, index=False)
    return buffer.getvalue()


def append_leaderboard(board: pd.DataFrame | None, row: dict) -> pd.DataFrame:
    new = pd.DataFrame([{c: row.get(c) for c in LEADERBOARD_COLUMNS}])
    if board is None or board.empty:
        return new
    return pd.concat([board, new], ignore_index=True)


def add_leaderboard_row(path: Path, row: dict) -> None:
    """Append one row to the leaderboard CSV; runs submitting at the same time each keep their row."""
    with file_lock(path):
        write_text(path, write_leaderboard(append_leaderboard(read_leaderboard(path), row)))


def kind_columns(prefix: str, by_kind: dict) -> dict:
    """Leaderboard columns of seen / unseen scores (SRC, MAE) and the unseen share."""
    out = {f"{prefix}_unseen_share": round(by_kind["unseen_share"], 4)}
    for kind in ("seen", "unseen"):
        for metric in ("src", "mae"):
            value = (by_kind.get(kind) or {}).get(metric)
            out[f"{prefix}_{metric}_{kind}"] = None if value is None or not np.isfinite(value) else round(value, 5)
    return out


def leaderboard_row(*, run: str, commit: str, config_digest: str, dataset: str, scheme: str, protocol: str,
                    folds_digest: str, member: str, validation: dict, test: dict, members: dict,
                    val_by_kind: dict, test_by_kind: dict, n_train: int, n_test: int) -> dict:
    """One leaderboard row: the run's validation scores (the report slice's), its test scores when
    labels were given (`test` empty otherwise), and the scores of what it blended (`members`)."""
    return {
        "run": run,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "config_digest": config_digest,
        "dataset": dataset,
        "scheme": scheme,
        "protocol": protocol, "folds_digest": folds_digest,
        "member": member,
        "val_src": round(validation["src"], 5), "val_mae": round(validation["mae"], 5),
        "val_mse": round(validation["mse"], 5),
        "test_src": round(test["src"], 5) if test else None,
        "test_mae": round(test["mae"], 5) if test else None,
        "test_mse": round(test["mse"], 5) if test else None,
        "members": "; ".join(f"{m}: src {s['src']:.4f} mae {s['mae']:.4f} mse {s['mse']:.4f}"
                             for m, s in members.items()),
        **kind_columns("val", val_by_kind), **kind_columns("test", test_by_kind),
        "n_train": n_train,
        "n_test": n_test,
    }
