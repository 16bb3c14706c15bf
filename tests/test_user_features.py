"""User features (features/user_features.py) and the CatBoost member: values, no leakage, degenerate data."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tiny_demo import config_dir, dump_records, load_records

from features.user_features import (CLUSTER, build_user_block, profile_text_features, similar_user_statistics,
                                    timing_features, user_trend_statistics)

DAY = 86400.0


def random_posts(n: int, n_users: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = pd.DataFrame({"Uid": rng.integers(0, n_users, n).astype(str),
                         "Postdate": rng.integers(0, 60, n) * DAY + rng.integers(0, 3, n),
                         CLUSTER: rng.integers(0, 3, n)})
    return keys, rng.normal(6.0, 2.0, n), rng.integers(0, 4, n)


def brute_trend(keys_fit, y, fold, keys_q, fold_q, half_life, max_lags, smoothing, prior):
    """The definition, one query at a time: the latest `max_lags` earlier fit posts of the user,
    those of the query's own inner fold left out."""
    out = []
    for i in range(len(keys_q)):
        same = np.flatnonzero((keys_fit["Uid"].to_numpy() == keys_q["Uid"].iloc[i])
                              & (keys_fit["Postdate"].to_numpy() < keys_q["Postdate"].iloc[i]))
        same = same[np.lexsort((same, keys_fit["Postdate"].to_numpy()[same]))][::-1][:max_lags]
        if fold_q is not None:
            same = same[fold[same] != fold_q[i]]
        dt = keys_q["Postdate"].iloc[i] - keys_fit["Postdate"].to_numpy()[same]
        w = 0.5 ** (dt / (half_life * DAY))
        out.append((np.sum(w * y[same]) + smoothing * prior[i]) / (w.sum() + smoothing))
    return np.array(out)


def test_trend_is_the_recency_weighted_mean_of_earlier_out_of_fold_posts():
    keys, y, fold = random_posts(300, 12, seed=1)
    apply_keys = random_posts(50, 15, seed=2)[0].assign(Postdate=lambda f: f["Postdate"] + 30 * DAY)
    fit, apply = user_trend_statistics(keys, y, fold, apply_keys, half_life_days=10.0, max_lags=8, smoothing=1.0)
    n_f = np.bincount(fold)
    s_f = np.bincount(fold, weights=y)
    prior_fit = (s_f.sum() - s_f[fold]) / (n_f.sum() - n_f[fold])
    np.testing.assert_allclose(fit["te_user_trend"], brute_trend(keys, y, fold, keys, fold, 10.0, 8, 1.0, prior_fit))
    expected = brute_trend(keys, y, fold, apply_keys, None, 10.0, 8, 1.0, np.full(50, y.mean()))
    np.testing.assert_allclose(apply["te_user_trend"], expected)
    unseen = ~apply_keys["Uid"].isin(keys["Uid"]).to_numpy()
    assert unseen.any() and (apply["te_user_trend_w"].to_numpy()[unseen] == 0).all()


def test_trend_never_sees_its_own_label_its_own_fold_or_later_posts():
    keys, y, fold = random_posts(200, 5, seed=3)

    def trend(labels, smoothing):
        return user_trend_statistics(keys, labels, fold, keys.iloc[:0], 20.0, 64, smoothing)[0]["te_user_trend"]
    i = 17
    user = (keys["Uid"] == keys["Uid"].iloc[i]).to_numpy()
    later = user & (keys["Postdate"] >= keys["Postdate"].iloc[i]).to_numpy()
    earlier = user & ~later & (fold != fold[i])
    assert later.sum() > 1 and earlier.any()
    # its own label and its inner fold's labels: nothing moves, the prior included
    changed = y + 5.0 * (fold == fold[i])
    assert trend(changed, 1.0).iloc[i] == trend(y, 1.0).iloc[i]
    # the user's later posts (any fold): unseen; without smoothing the prior is out of the way
    assert trend(y + 5.0 * later, 0.0).iloc[i] == trend(y, 0.0).iloc[i]
    # an earlier post of another fold: seen
    assert trend(y + 5.0 * earlier, 0.0).iloc[i] > trend(y, 0.0).iloc[i]


def test_similar_users_leave_the_user_and_the_fold_out():
    keys, y, fold = random_posts(300, 20, seed=4)
    fit, apply = similar_user_statistics(keys, y, fold, keys, smoothing=5.0)
    uid, cluster = keys["Uid"].to_numpy(), keys[CLUSTER].to_numpy()
    n_f, s_f = np.bincount(fold), np.bincount(fold, weights=y)
    for i in range(0, 300, 37):
        rows = (cluster == cluster[i]) & (uid != uid[i]) & (fold != fold[i])
        prior = (s_f.sum() - s_f[fold[i]]) / (n_f.sum() - n_f[fold[i]])
        assert np.isclose(fit["te_similar_users_mean"].iloc[i], (y[rows].sum() + 5 * prior) / (rows.sum() + 5))
        # apply rows: all fit posts of the other users, weighted by (K-1)/K to the fit rows' scale
        rows = (cluster == cluster[i]) & (uid != uid[i])
        share = 3 / 4
        assert np.isclose(apply["te_similar_users_n"].iloc[i], share * rows.sum())
        assert np.isclose(apply["te_similar_users_mean"].iloc[i],
                          (share * y[rows].sum() + 5 * y.mean()) / (share * rows.sum() + 5))


def test_on_a_time_holdout_user_statistics_see_every_strictly_earlier_fit_post_and_no_later_one():
    """Window `expanding`: a fit row sees what an apply row at its moment sees (any inner fold, earlier only)."""
    keys, y, fold = random_posts(300, 12, seed=5)
    prior = (np.bincount(fold, weights=y).sum() - np.bincount(fold, weights=y)[fold]) / (300 - np.bincount(fold)[fold])
    fit, same_moment = user_trend_statistics(keys, y, fold, keys, 10.0, 8, 1.0, window="expanding")
    np.testing.assert_allclose(fit["te_user_trend"], brute_trend(keys, y, fold, keys, None, 10.0, 8, 1.0, prior))
    np.testing.assert_allclose(fit["te_user_trend_w"], same_moment["te_user_trend_w"])
    fit, same_moment = similar_user_statistics(keys, y, fold, keys, smoothing=5.0, window="expanding")
    uid, cluster, t = keys["Uid"].to_numpy(), keys[CLUSTER].to_numpy(), keys["Postdate"].to_numpy()
    for i in range(0, 300, 29):
        rows = (cluster == cluster[i]) & (uid != uid[i]) & (t < t[i])
        assert fit["te_similar_users_n"].iloc[i] == same_moment["te_similar_users_n"].iloc[i] == rows.sum()
        assert np.isclose(fit["te_similar_users_mean"].iloc[i], (y[rows].sum() + 5 * prior[i]) / (rows.sum() + 5))


def test_timing_counts_the_users_previous_posts_in_the_window():
    codes = np.array([0, 0, 0, 1, 0, 1])
    t = np.array([0.0, 0.5, 3.0, 3.0, 20.0, 3.0]) * DAY
    f = timing_features(codes, t)
    np.testing.assert_allclose(f["user_days_since_prev"], [np.nan, 0.5, 2.5, np.nan, 17.0, 0.0])
    np.testing.assert_allclose(f["user_days_to_next"], [0.5, 2.5, 17.0, 0.0, np.nan, np.nan])
    np.testing.assert_array_equal(f["user_posts_last_day"], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(f["user_posts_last_week"], [0, 1, 2, 1, 0, 1])


def fake_encoder(texts):
    """A deterministic stand-in for the text encoder: character counts (the PCA is what is tested)."""
    return np.array([[t.count(c) for c in "aeiou xyz"] + [len(t)] for t in texts], dtype=np.float64)


def test_profile_texts_reduce_per_user_and_empty_texts_get_nan():
    texts = np.array(["I love cats", "", "Professional photographer", "I love cats", "Paris, France", " "])
    values, names = profile_text_features(texts, fake_encoder, 2, "desc")
    assert names == ["user_desc_0", "user_desc_1"] and values.shape == (6, 2)
    assert np.isnan(values[[1, 5]]).all() and np.isfinite(values[[0, 2, 3, 4]]).all()
    np.testing.assert_array_equal(values[0], values[3])
    # too little text to reduce: no columns rather than a crash
    assert profile_text_features(np.array(["", "a", "a"]), fake_encoder, 4, "desc")[1] == []


def posts_frame(n, seed, uid_prefix="u"):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"Pid": [f"{uid_prefix}{seed}_{i}" for i in range(n)],
                         "Uid": [f"{uid_prefix}{k}" for k in rng.integers(0, 6, n)],
                         "Postdate": rng.integers(0, 10**6, n), "Mediatype": np.where(rng.random(n) < 0.2, "video", "photo"),
                         "Category": "Only", "photo_count": rng.integers(1, 100, n).astype(float),
                         "user_description": "", "location_description": ""})


def test_block_on_degenerate_data_no_text_one_category_unseen_test_users():
    train, test = posts_frame(30, 0), posts_frame(12, 1, uid_prefix="new")
    calls = []
    tr, te, summary = build_user_block(train, test, lambda t: calls.append(t) or fake_encoder(t), text_dims=4,
                                       mix=True, timing=True, clusters=True)
    assert not calls  # no text at all: the encoder is never run
    assert tr["Pid"].tolist() == train["Pid"].tolist() and te["Pid"].tolist() == test["Pid"].tolist()
    assert "user_video_share" in tr and not [c for c in tr if c.startswith(("user_category_share", "user_desc"))]
    assert summary["clusters"] >= 1 and tr[CLUSTER].notna().all()


def run_pipeline(run_all_here, data: Path, tmp: Path):
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "encoders": {"enabled": True}, "prototype": {"enabled": False}, "tuning": {"enabled": False},
        "users": {"text_dims": 3, "mix": True, "timing": True, "trend": True, "similar_users": True},
        "catboost": {"enabled": True, "feature_sets": ["meta"], "iterations": 40},
        "gbdt": {"num_boost_round": 30, "seeds": [0], "feature_sets": {"meta": ["meta"]}},
        "ensemble": {"method": "nnls", "linear_members": {"ridge_meta": ["meta"]}},
    }))
    return run_all_here("--data-dir", data, "--work-dir", tmp / "work", "--submissions-dir", tmp / "subs",
                        "--run-name", "run", "--config", config, "--stages",
                        "read_data,make_folds,build_metadata,user_features,adversarial,train_trees,train_linear,blend,submit")


def test_every_switch_on_with_no_text_one_class_and_only_new_test_users_gives_a_valid_submission(data, tmp_path, run_all_here):
    for split in ("train", "test"):
        path = data / f"{split}_text.json"
        records = load_records(path)
        for r in records:
            r.update(Title="", Alltags="")
        dump_records(path, records)
        path = data / f"{split}_category.json"
        dump_records(path, [{**r, "Category": "One", "Subcategory": "One", "Concept": "one"}
                            for r in load_records(path)])
        path = data / f"{split}_user_data.json"
        dump_records(path, [{**r, "user_description": "", "location_description": ""} for r in load_records(path)])
    for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
        path = data / f"test_{kind}.json"
        dump_records(path, [{**r, "Uid": f"new{r['Uid']}"} for r in load_records(path)])
    result = run_pipeline(run_all_here, data, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    submission = pd.read_csv(tmp_path / "subs" / "run" / "submission.csv")
    assert len(submission) == len(load_records(data / "test_text.json"))
    assert np.isfinite(submission["popularity_score"]).all()
    config = config_dir(tmp_path / "work")
    blend = json.loads((config / "preds" / "final.json").read_text())
    assert set(blend["weights"]) == {"meta", "cb_meta", "ridge_meta"}
    summary = json.loads((config / "preds" / "cb_meta.json").read_text())
    assert summary["model"] == "catboost" and np.isfinite(summary["score"]["mae"])
    user = pd.read_parquet(config / "features" / "user_test.parquet")
    assert "user_days_since_prev" in user and not [c for c in user if c.startswith("user_desc")]
