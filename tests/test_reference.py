"""The panel's reference model (benchmarks/reference.py): early stopping on its own inner time split
and the `meta` member's target statistics."""
import numpy as np
import pandas as pd
import pytest

from benchmarks.reference import KEY_COLUMNS, MAX_ROUNDS, reference_predictions


def posts(n: int, n_users: int, rng: np.random.Generator, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"Pid": [str(start + i) for i in range(n)], "Uid": rng.integers(0, n_users, n).astype(str),
                         "Category": "c", "Subcategory": "s", "Concept": "k", "Alltags": "a b",
                         "Postdate": np.arange(start, start + n, dtype=np.float64)})


def meta(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"Pid": p["Pid"], "x": rng.normal(size=len(p))})


@pytest.mark.parametrize("seed", [1, 2])
def test_the_rounds_are_chosen_on_the_inner_split_not_fixed(seed):
    rng = np.random.default_rng(seed)
    train, test = posts(400, 40, rng), posts(100, 40, rng, start=400)
    y = rng.normal(size=len(train))  # nothing to learn: the inner split stops within a few rounds
    _, rounds = reference_predictions(meta(train, rng), meta(test, rng), train[KEY_COLUMNS], y, test[KEY_COLUMNS])
    assert 1 <= rounds < 20 < MAX_ROUNDS


def test_the_user_statistic_carries_a_users_level_to_the_test_posts():
    rng = np.random.default_rng(1)
    train, test = posts(600, 30, rng), posts(200, 30, rng, start=600)
    level = pd.Series(rng.normal(scale=2.0, size=30), index=[str(u) for u in range(30)])
    y = level[train["Uid"]].to_numpy() + rng.normal(scale=0.3, size=len(train))
    pred, rounds = reference_predictions(meta(train, rng), meta(test, rng), train[KEY_COLUMNS], y, test[KEY_COLUMNS])
    assert rounds > 1
    assert np.corrcoef(pred, level[test["Uid"]].to_numpy())[0, 1] > 0.9
