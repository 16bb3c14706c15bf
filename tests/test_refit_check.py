"""validation.refit_check: the report slice predicted the way the test is (models/cv.py).

The reported score comes from the fold models; the test from refits (or the fold models' mean). A
setting that acts on that last step only (gbdt.refit_kfold, the refit's scaled rounds) cannot move the
reported score; the refit check must move with it, and like the reported score it must never see a
report-slice label. Real code path on tiny data (cross_fit with LightGBM and target statistics), and a
tiny pipeline run for scores.json and the submission.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.cv import TargetStatSpec, cross_fit
from models.validation import make_folds, report_rows
from test_protocol import lightgbm, perturbed, tiny
from tiny_demo import OPTIONAL_OFF, TINY_DEMO


def fit(folds, y, refit_check=True, **options):
    posts, X, _, X_test, stats = tiny()
    spec = TargetStatSpec(stats.keys_train, stats.keys_test, stats.key_columns, stats.smoothing, stats.tags)
    return cross_fit(lightgbm, X, y, folds, X_test, target_stats=spec, progress=False, refit_check=refit_check,
                     **options)


@pytest.mark.parametrize("scheme", ["time_holdout", "kfold"])
def test_the_check_covers_the_report_slice_and_leaves_the_test_prediction_alone(scheme):
    posts, _, y, _, _ = tiny()
    folds = make_folds(posts, scheme, 3, seed=0, holdout_frac=0.4, min_holdout_posts=0, report_frac=0.2)
    report = report_rows(folds)
    on, off = fit(folds, y, scale_refit_rounds=True), fit(folds, y, refit_check=False, scale_refit_rounds=True)
    assert np.isfinite(on.refit_check[report]).all() and np.isnan(on.refit_check[~report]).all()
    assert off.refit_check is None and off.refit_check_score == {}
    assert 0 < on.refit_check_score["src"] <= 1
    np.testing.assert_array_equal(on.test, off.test)
    np.testing.assert_array_equal(on.oof, off.oof)


@pytest.mark.parametrize("scheme,option", [("time_holdout", "scale_refit_rounds"), ("kfold", "refit_kfold")])
def test_a_refit_only_setting_moves_the_check_but_not_the_reported_score(scheme, option):
    posts, _, y, _, _ = tiny()
    folds = make_folds(posts, scheme, 3, seed=0, holdout_frac=0.4, min_holdout_posts=0, report_frac=0.2)
    with_it, without = fit(folds, y, **{option: True}), fit(folds, y, **{option: False})
    assert with_it.score == without.score
    assert with_it.refit_check_score != without.refit_check_score
    assert not np.array_equal(with_it.test, without.test)


@pytest.mark.parametrize("scheme,options", [("time_holdout", {"scale_refit_rounds": True}),
                                            ("kfold", {"refit_kfold": True}), ("kfold", {"refit_kfold": False})])
def test_no_report_label_reaches_the_check(scheme, options):
    posts, _, y, _, _ = tiny()
    folds = make_folds(posts, scheme, 3, seed=0, holdout_frac=0.4, min_holdout_posts=0, report_frac=0.2)
    report = np.flatnonzero(report_rows(folds))
    before, after = fit(folds, y, **options), fit(folds, perturbed(y, report), **options)
    np.testing.assert_array_equal(before.refit_check, after.refit_check)


def test_a_run_with_the_check_reports_it_and_submits_the_same_file(tmp_path, run_all_here):
    common = ["--work-dir", tmp_path / "work", "--submissions-dir", tmp_path / "subs", *TINY_DEMO, *OPTIONAL_OFF,
              "--set", "gbdt.num_boost_round=60"]
    assert run_all_here(*common, "--run-name", "plain").returncode == 0
    assert run_all_here(*common, "--run-name", "checked", "--set", "validation.refit_check=true").returncode == 0
    plain, checked = (json.loads((tmp_path / "subs" / r / "scores.json").read_text()) for r in ("plain", "checked"))
    assert "refit_check" not in plain
    assert set(checked["refit_check"]) >= {"src", "mae"} and checked["validation"] == plain["validation"]
    assert ((tmp_path / "subs" / "checked" / "submission.csv").read_bytes()
            == (tmp_path / "subs" / "plain" / "submission.csv").read_bytes())
