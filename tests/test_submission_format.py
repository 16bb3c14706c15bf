import json

import numpy as np
import pytest

from submissions.format import SubmissionError, check_submission, read_submission_csv, submission_csv, submission_json

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
