"""Adversarial validation (models/adversarial.py, stage `adversarial`): the classifier's AUC on shifted
and unshifted data, the ranking of shifted features, what it does on hostile data (a few posts, constant
features, no text), the weights, and that the diagnostic changes no submission."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from models.adversarial import EXCLUDED, adversarial_validation, likeness_weights, univariate_auc
from pipeline.config import ConfigError, load_config
from tests.tiny_demo import OPTIONAL_OFF, TINY_DEMO, config_dir, degenerate_data, run_all


def frames(n_train=300, n_test=100, shift=0.0, seed=0):
    """Random features of two splits; `x_shifted` (and the category `c_shifted`) moved by `shift` in test;
    the test posts' dates after the train posts'."""
    rng = np.random.default_rng(seed)

    def part(n, moved, later=0):
        return pd.DataFrame({
            "x_noise": rng.normal(size=n), "x_shifted": rng.normal(size=n) + moved,
            "c_shifted": pd.Categorical(rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1] if not moved
                                                   else [0.2, 0.3, 0.5]), categories=["a", "b", "c"]),
            "x_constant": np.ones(n), "meta_postdate_days": np.arange(n) + later})
    return part(n_train, 0.0), part(n_test, shift, later=10_000)  # the test period follows the train period


def test_the_same_distribution_gives_an_auc_near_one_half():
    train, test = frames(shift=0.0)
    result = adversarial_validation(train, test, seed=0)
    assert 0.4 < result.auc < 0.6
    assert result.features["shift"].max() < 0.12
    assert np.isfinite(result.train_likeness).all() and len(result.train_likeness) == 300


def test_a_shifted_feature_is_found_and_the_post_date_is_left_out():
    train, test = frames(shift=1.5)
    result = adversarial_validation(train, test, seed=0)
    assert result.auc > 0.8
    top = result.features["feature"].tolist()[:2]
    assert set(top) == {"x_shifted", "c_shifted"}  # the categorical one by its out-of-fold test share
    shifted = result.features.set_index("feature").loc["x_shifted"]
    assert shifted["univariate_auc"] > 0.8 and shifted["gain_share"] > 0.5
    # the date would separate perfectly: out, with why; the constant column is out too
    assert "meta_postdate_days" in result.excluded and "meta_postdate_days" not in top
    assert result.excluded["x_constant"] == "the same value in every post"
    assert set(result.features["feature"]) == {"x_noise", "x_shifted", "c_shifted"}
    # the train posts that look most like test have the largest shifted values
    most = np.argsort(-result.train_likeness)[:20]
    assert train["x_shifted"].to_numpy()[most].mean() > 1.0


def test_features_that_follow_the_post_date_are_ranked_but_kept_out_of_the_classifier():
    train, test = frames(shift=0.0)
    dates = (train["meta_postdate_days"].to_numpy(), test["meta_postdate_days"].to_numpy())
    users = tuple(np.arange(len(d)) % 7 for d in dates)
    # the account's age at the post: the date less the user's first date, which varies far more across
    # users than the dates do, so the date shows only within users
    first = np.random.default_rng(1).uniform(-250_000, 0, 7)
    for frame, d, u in zip((train, test), dates, users):
        frame["x_time"] = d * 2.0
        frame["x_account_age"] = d - first[u]
    plain = adversarial_validation(train, test)
    assert plain.auc > 0.95  # the date's stand-ins separate the splits by construction
    result = adversarial_validation(train, test, post_dates=dates, users=users)
    table = result.features.set_index("feature")
    assert table.loc["x_time", "time_corr"] == pytest.approx(1.0) and not table.loc["x_time", "in_classifier"]
    assert not table.loc["x_account_age", "in_classifier"]  # caught within users
    assert abs(table.loc["x_noise", "time_corr"]) < 0.2 and np.isnan(table.loc["c_shifted", "time_corr"])
    assert table.loc["x_time", "univariate_auc"] == 1.0 and table.loc["x_time", "gain_share"] == 0.0
    assert 0.35 < result.auc < 0.65  # besides time, nothing shifts
    only_time = adversarial_validation(train[["x_time"]], test[["x_time"]], post_dates=dates)
    assert only_time.auc is None and "stands in for the post date" in only_time.reason
    assert only_time.features["feature"].tolist() == ["x_time"]


def test_it_is_reproducible_bit_for_bit():
    train, test = frames(shift=0.5)
    a, b = (adversarial_validation(train, test, seed=3) for _ in range(2))
    assert a.auc == b.auc and np.array_equal(a.train_likeness, b.train_likeness)
    pd.testing.assert_frame_equal(a.features, b.features)


def test_too_few_posts_for_the_folds_give_no_auc_with_the_reason(caplog):
    train, test = frames(n_train=40, n_test=3)
    with caplog.at_level(logging.INFO):
        result = adversarial_validation(train, test, n_folds=5)
    assert result.auc is None and "fewer than 5" in result.reason
    assert "no AUC" in caplog.text
    assert np.isnan(result.train_likeness).all() and result.features.empty
    assert np.array_equal(likeness_weights(result.train_likeness), np.ones(40))


def test_only_constant_or_excluded_columns_give_no_auc():
    train, test = frames()
    cols = ["x_constant", "meta_postdate_days"]
    result = adversarial_validation(train[cols], test[cols])
    assert result.auc is None and "no feature column varies" in result.reason
    assert set(result.excluded) == set(cols)


def test_one_user_and_missing_values_still_run():
    train, test = frames(shift=1.0)
    train.loc[::3, "x_shifted"] = np.nan  # missing values rank lowest: a shift in missingness counts
    train["user_posts"], test["user_posts"] = 400.0, 400.0  # one user: a constant column
    result = adversarial_validation(train, test)
    assert result.auc > 0.7 and "user_posts" in result.excluded
    assert univariate_auc([np.nan, np.nan], [1.0, 2.0]) == 1.0
    assert univariate_auc([5.0, 5.0], [5.0]) == 0.5


def test_the_weights_follow_test_likeness_within_bounds_and_mean_one():
    p = np.random.default_rng(0).beta(0.3, 3.0, 2000)
    w = likeness_weights(p)
    assert w.mean() == pytest.approx(1.0) and w.min() >= 0.1 - 1e-9 and w.max() <= 10.0 + 1e-6
    order = np.argsort(p)
    assert (np.diff(w[order]) >= -1e-12).all()  # more test-like, never lighter
    assert np.array_equal(likeness_weights(np.full(7, 0.25)), np.ones(7))
    assert np.array_equal(likeness_weights(np.array([0.5, np.nan])), np.ones(2))


def test_config_checks_blocks_and_the_weights_switch():
    assert load_config(None).validation.adversarial is True
    assert load_config(None).validation.adversarial_weights is False
    with pytest.raises(ConfigError, match="adversarial_blocks"):
        load_config(None, ["validation.adversarial_blocks=[meta, pixels]"])
    with pytest.raises(ConfigError, match="adversarial_weights needs"):
        load_config(None, ["validation.adversarial=false", "validation.adversarial_weights=true"])


# --- the stage, in the pipeline ----------------------------------------------------------------------
RUNS = {"on": [], "off": ["validation.adversarial=false"], "weighted": ["validation.adversarial_weights=true"]}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny demo with the diagnostic on (the default), off, and with its weights; one work folder."""
    root = tmp_path_factory.mktemp("adversarial")
    for name, sets in RUNS.items():
        run_all(["--work-dir", str(root / "work"), "--submissions-dir", str(root / "subs"), "--run-name", name,
                 *TINY_DEMO, *OPTIONAL_OFF, *[f"--set={s}" for s in sets]])
    folders = {}
    for folder in (root / "work").glob("config-*"):
        config = (folder / "config.yaml").read_text()
        folders["off" if "adversarial: false" in config else
                "weighted" if "adversarial_weights: true" in config else "on"] = folder
    assert set(folders) == set(RUNS)
    return root, folders


def test_the_diagnostic_changes_no_submission_and_shows_in_scores_and_report(tiny_runs):
    root, folders = tiny_runs
    on, off = root / "subs" / "on", root / "subs" / "off"
    for name in ("submission.csv", "submission.json"):
        assert (on / name).read_bytes() == (off / name).read_bytes()
    assert not (folders["off"] / "adversarial").exists()
    adv = json.loads((on / "scores.json").read_text())["adversarial"]
    assert 0.0 <= adv["auc"] <= 1.0 and adv["blocks"] == ["meta"] and len(adv["top_shifted_features"]) == 10
    assert adv["time_auc"] == 1.0  # the demo's test period follows its train period
    proxies = {f["feature"] for f in adv["top_shifted_features"] if not f["in_classifier"]}
    assert {"meta_days_since_user_first", "meta_user_post_rank"} <= proxies
    assert len(adv["most_test_like"]) == 10 and adv["weights"]["used"] is False
    assert all(-1.0 <= f["time_corr"] <= 1.0 for f in adv["top_shifted_features"] if f["time_corr"] is not None)
    assert "NaN" not in (folders["on"] / "adversarial" / "summary.json").read_text()  # strict JSON
    # every column it leaves out by name is a column of the real meta block
    assert set(EXCLUDED) <= set(pd.read_parquet(folders["on"] / "features" / "meta_train.parquet").columns)
    assert "adversarial" not in json.loads((off / "scores.json").read_text())
    assert (on / "figures" / "adversarial_validation.png").is_file()
    page = (on / "report.html").read_text()
    assert "<h2>Adversarial validation</h2>" in page and "Train posts that look most like test posts" in page
    assert "Adversarial validation" not in (off / "report.html").read_text()


def test_the_weights_reach_the_lightgbm_fits_only(tiny_runs):
    root, folders = tiny_runs
    preds = {run: {m: pd.read_parquet(folders[run] / "preds" / f"{m}.parquet")["pred"].to_numpy()
                   for m in ("meta", "ridge_meta")} for run in ("on", "weighted")}
    assert not np.allclose(preds["weighted"]["meta"], preds["on"]["meta"])  # LightGBM: weighted
    assert np.array_equal(preds["weighted"]["ridge_meta"], preds["on"]["ridge_meta"])  # ridge: not
    scores = json.loads((root / "subs" / "weighted" / "scores.json").read_text())
    assert scores["adversarial"]["weights"]["used"] is True


def test_no_text_and_a_block_whose_stage_is_off(tmp_path, run_all_here, caplog):
    data = degenerate_data(tmp_path, "no_text", n_train=60, n_test=20)
    args = ["--data-dir", data, "--work-dir", tmp_path / "work", "--submissions-dir", tmp_path / "subs",
            "--run-name", "r", *OPTIONAL_OFF, "--set=validation.adversarial_blocks=[meta, emb]",
            "--set=validation.adversarial_weights=true"]
    done = run_all_here(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "adversarial: block emb left out: its stage is off" in done.stderr
    adv = json.loads((tmp_path / "subs" / "r" / "scores.json").read_text())["adversarial"]
    assert adv["blocks"] == ["meta"] and adv["blocks_left_out"] == {"emb": "its stage is off in this config"}
    # every title and tag string is empty: those columns are constant and left out, named
    assert adv["excluded"]["meta_title_len"] == "the same value in every post"
    assert adv["auc"] is not None
    posts = pd.read_parquet(config_dir(tmp_path / "work") / "adversarial" / "posts.parquet")
    assert len(posts) == 80 and posts["weight"].iloc[:60].mean() == pytest.approx(1.0)
