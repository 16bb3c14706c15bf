"""The MLP member (models/mlp.py, mlp.* in pipeline/config.py): the model contract on small frames, bit-for-bit
reruns, unseen categories and tags, missing and absurd numbers, constant columns; and the pipeline with
mlp.enabled on a data set without images, without text and with one user, ending in a valid submission."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.mlp import MLPRegressor
from pipeline.config import ConfigError, load_config
from pipeline.members import members_of
from reporting.submission_format import check_submission
from tests.tiny_demo import _no_images, _no_text, _rewrite_records, load_records

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(epochs=15, patience=3, width=16, batch_size=32, min_count=2, cat_columns=("cat_Uid",),
            tag_columns=("cat_Alltags",))


def frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "a": rng.normal(size=n),
        "b": np.where(rng.random(n) < 0.3, np.nan, rng.exponential(size=n)),
        "meta_category": pd.Categorical(rng.choice(["x", "y", "z"], n)),
        "cat_Uid": rng.choice([f"u{i}" for i in range(8)], n),
        "cat_Alltags": [" ".join(rng.choice(["sun", "sea", "cat", "dog"], rng.integers(0, 3))) for _ in range(n)],
    })
    y = 2.0 * X["a"].to_numpy() + (X["meta_category"] == "x").to_numpy() + (X["cat_Uid"] == "u0").to_numpy() \
        + rng.normal(scale=0.2, size=n)
    return X, y


def test_fit_predict_contract_learns_and_stops_early():
    X, y = frame(400)
    model = MLPRegressor(**FAST).fit(X[:300], y[:300], X[300:350], y[300:350])
    pred = model.predict(X[350:])
    assert pred.shape == (50,) and np.isfinite(pred).all()
    assert np.corrcoef(pred, y[350:])[0, 1] > 0.8  # it learns, on rows it never saw
    assert 1 <= model.best_iteration_ <= FAST["epochs"]
    with pytest.raises(RuntimeError, match="fit the model"):
        MLPRegressor().predict(X)
    with pytest.raises(ValueError, match="same order"):
        model.predict(X[X.columns[::-1]])


def test_without_validation_it_trains_exactly_the_given_epochs():
    X, y = frame(100)
    assert MLPRegressor(**{**FAST, "epochs": 4}).fit(X, y).best_iteration_ == 4


def test_two_runs_give_the_same_bits_and_leave_torch_settings_as_they_were():
    X, y = frame(300)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    preds = [MLPRegressor(**FAST, seed=1).fit(X[:200], y[:200], X[200:250], y[200:250]).predict(X[250:])
             for _ in range(2)]
    assert preds[0].tobytes() == preds[1].tobytes()
    other = MLPRegressor(**FAST, seed=2).fit(X[:200], y[:200], X[200:250], y[200:250]).predict(X[250:])
    assert other.tobytes() != preds[0].tobytes()  # the seed matters: the test above can fail
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)


def test_unseen_categories_tags_missing_and_absurd_numbers_at_predict():
    X, y = frame(200)
    model = MLPRegressor(**FAST).fit(X, y)
    new = X.head(4).copy()
    new["cat_Uid"] = ["never-seen", None, "u1", ""]
    new["cat_Alltags"] = ["unheard words", None, "", "sun unheard"]
    new["meta_category"] = pd.Categorical(["w", None, "x", "y"])  # "w": a category the fit rows lacked
    new["a"] = [np.nan, np.inf, -np.inf, 1e300]
    new["b"] = np.nan
    pred = model.predict(new)
    assert pred.shape == (4,) and np.isfinite(pred).all()


def test_constant_all_missing_and_single_category_columns_do_not_break_it():
    X, y = frame(120)
    X = X.assign(const=3.0, empty=np.nan, meta_category=pd.Categorical(["x"] * len(X)), cat_Uid="only-user")
    model = MLPRegressor(**FAST).fit(X[:80], y[:80], X[80:100], y[80:100])
    assert model.numeric_ == ["a", "b"]  # the constant and the empty column are dropped
    changed = X[100:].assign(const=1e9)  # a value the constant never took changes nothing
    assert model.predict(changed).tobytes() == model.predict(X[100:]).tobytes()


def test_a_text_column_that_is_not_a_declared_category_is_named():
    X, y = frame(50)
    with pytest.raises(ValueError, match="'cat_Uid'.*expected numbers"):
        MLPRegressor(**{**FAST, "cat_columns": ()}).fit(X, y)


def test_config_section_is_off_by_default_and_validated():
    assert not load_config(ROOT / "configs" / "demo.yaml").mlp.enabled
    on = load_config(ROOT / "configs" / "demo.yaml", ["mlp.enabled=true", "encoders.enabled=false"])
    assert members_of(on, ("mlp",)) == {}  # meta_emb needs the encoders: nothing to run, no error
    assert members_of(load_config(ROOT / "configs" / "demo.yaml", ["mlp.enabled=true"]), ("mlp",)) == \
        {"mlp_meta_emb": ("mlp", ["meta", "emb", "imgstats", "user"])}  # the demo's meta_emb, plus the user block
    meta = load_config(ROOT / "configs" / "demo.yaml",
                       ["mlp.enabled=true", "mlp.feature_sets=[meta]", "encoders.enabled=false"])
    assert members_of(meta, ("mlp",)) == {"mlp_meta": ("mlp", ["meta"])}
    assert meta.mlp.seeds == [meta.seed]
    with pytest.raises(ConfigError, match="mlp.feature_sets"):
        load_config(None, ["mlp.enabled=true", "mlp.feature_sets=[nope]"])
    with pytest.raises(ConfigError, match="dropout"):
        load_config(None, ["mlp.dropout=1.5"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["mlp.layers=3"])


def _one_user(data: Path) -> None:
    for split in ("train", "test"):
        for kind in ("category", "text", "temporalspatial_information", "user_data", "additional_information"):
            _rewrite_records(data, split, kind, lambda r: r.update(Uid="the-one-user"))


def test_pipeline_with_the_mlp_on_data_without_images_text_or_a_second_user(tmp_path, run_all_here):
    from features.demo import MARKER, make_demo
    data = tmp_path / "data"
    make_demo(data, tmp_path / "labels.txt", n_train=120, n_test=40, n_users=10, image_size=16, seed=7)
    (data / MARKER).unlink()
    _no_images(data)
    _no_text(data)
    _one_user(data)
    done = run_all_here("--data-dir", data, "--config", ROOT / "configs" / "demo.yaml",
                        "--work-dir", tmp_path / "work", "--submissions-dir", tmp_path / "subs", "--run-name", "mlp",
                        "--set", "encoders.enabled=false", "--set", "prototype.enabled=false",
                        "--set", "tuning.enabled=false", "--set", "mlp.enabled=true",
                        "--set", "mlp.feature_sets=[meta]", "--set", "mlp.epochs=10")
    assert done.returncode == 0, done.stderr[-3000:]
    preds = next((tmp_path / "work").glob("config-*/preds"))
    summary = json.loads((preds / "mlp_meta.json").read_text())
    assert summary["model"] == "mlp" and np.isfinite(summary["score"]["mae"])
    member = pd.read_parquet(preds / "mlp_meta.parquet")
    assert np.isfinite(member.loc[member["split"] == "test", "pred"]).all()
    test_pids = [str(r["Pid"]) for r in load_records(data / "test_category.json")]
    sub = pd.read_csv(tmp_path / "subs" / "mlp" / "submission.csv", dtype={"post_id": str})
    check_submission(np.array([f"post{p}" for p in test_pids]), sub["post_id"].to_numpy(),
                     sub["popularity_score"].to_numpy())
    assert "mlp_meta" in json.loads((preds / "final.json").read_text())["weights"]  # the blend weighed it
