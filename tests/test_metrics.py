import numpy as np
import pytest
from scipy.stats import spearmanr

from models.metrics import mae, mse, score, src


def test_metrics_match_scipy_and_numpy():
    rng = np.random.default_rng(0)
    y = np.round(rng.normal(6.4, 2.5, 500), 2)  # two decimals: many ties, as in SMPD
    p = y + rng.normal(0, 1.5, 500)
    assert src(y, p) == pytest.approx(spearmanr(y, p).statistic, abs=1e-12)
    assert mae(y, p) == pytest.approx(np.abs(y - p).mean())
    assert mse(y, p) == pytest.approx(((y - p) ** 2).mean())
    assert set(score(y, p)) == {"src", "mae", "mse"}


def test_src_is_rank_based():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert src(y, np.exp(y)) == pytest.approx(1.0)
    assert src(y, -y) == pytest.approx(-1.0)


@pytest.mark.parametrize("y, p", [([1.0, 2.0], [1.0]), ([1.0, np.nan], [1.0, 2.0]), ([1.0], [1.0])])
def test_metrics_reject_bad_input(y, p):
    with pytest.raises(ValueError):
        score(y, p)


def test_src_of_a_constant_prediction_or_label_is_zero_not_nan():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert src(y, np.full(4, 6.4)) == 0.0
    assert src(np.full(4, 6.4), y) == 0.0
    assert score(y, np.full(4, 6.4))["src"] == 0.0
