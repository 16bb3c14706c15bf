"""The panel's keep rule and steering figures (benchmarks/panel.py), on made-up numbers."""
import pytest

from benchmarks.panel import benefit, rank_correlation, sign_agreement, steering, verdict

NOISE = {"a": {"src": 0.01, "mae": 0.02}, "b": {"src": 0.01, "mae": 0.02}, "c": {"src": 0.05, "mae": 0.05}}


def rows(src, mae):
    return [{"data set": s, "src": x, "mae": y} for s, x, y in zip("abc", src, mae)]


def test_benefit_counts_src_up_and_mae_down_as_positive():
    assert benefit({"src": 0.5, "mae": 1.0}, {"src": 0.4, "mae": 1.2}) == pytest.approx({"src": 0.1, "mae": 0.2})


def test_keep_when_it_helps_on_most_and_hurts_none_beyond_noise():
    # c gets a little worse in SRC, but less than its noise of 0.05
    assert verdict(rows([0.02, 0.03, -0.04], [0.01, 0.05, 0.01]), NOISE) == "keep"


def test_drop_when_one_set_is_hurt_beyond_its_noise():
    # helps a and b a lot, but costs c 0.06 SRC, more than c's noise of 0.05
    assert verdict(rows([0.10, 0.10, -0.06], [0.01, 0.01, 0.01]), NOISE) == "drop"


def test_drop_when_it_helps_only_half_or_fewer():
    assert verdict(rows([0.02, -0.001, -0.001], [0.01, 0.01, 0.01]), NOISE) == "drop"
    assert verdict(rows([0.02, 0.0], [0.01, 0.01])[:2], NOISE) == "drop"  # 1 of 2 is not most


def test_both_metrics_must_pass():
    # SRC passes; MAE is worse on a by 0.03, beyond a's MAE noise of 0.02
    assert verdict(rows([0.02, 0.02, 0.02], [-0.03, 0.01, 0.01]), NOISE) == "drop"


def test_verdict_needs_rows():
    with pytest.raises(ValueError, match="no data set rows"):
        verdict([], NOISE)


def test_sign_agreement_leaves_out_rows_that_did_not_move():
    share, n = sign_agreement([(0.1, 0.2), (-0.1, 0.05), (0.0, 0.0), (-0.2, -0.1)])
    assert (share, n) == (pytest.approx(2 / 3), 3)
    assert sign_agreement([(0.0, 0.0)]) == (None, 0)


def test_rank_correlation():
    assert rank_correlation([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.8, 0.7]) == pytest.approx(0.8)
    assert rank_correlation([0.1, 0.2], [0.1, 0.2]) is None  # too few runs
    assert rank_correlation([0.1, 0.1, 0.1], [0.1, 0.2, 0.3]) is None  # validation constant


def test_steering_over_switch_rows():
    def s(vs, vm, ts, tm):
        return {"val_src": vs, "val_mae": vm, "test_src": ts, "test_mae": tm}
    scores = {
        "default": {"x": s(0.50, 1.00, 0.40, 1.10), "y": s(0.30, 1.20, 0.35, 1.25)},
        "no-a": {"x": s(0.45, 1.05, 0.38, 1.12), "y": s(0.32, 1.10, 0.30, 1.30)},
        "no-b": {"x": s(0.55, 0.90, 0.45, 1.00), "y": s(0.28, 1.30, 0.33, 1.20)},
        "no-c": {"x": s(0.50, 1.00, 0.41, 1.10)},  # validation blind: only the test SRC moved; not run on y
        "seed-1": {"x": s(0.99, 0.0, 0.0, 0.0), "y": s(0.99, 0.0, 0.0, 0.0)},  # not a switch: left out
    }
    out = steering(scores, "default", ["no-a", "no-b", "no-c"])
    # SRC: x down/down, y up/down, x up/up, y down/down, x 0/up -> 3 of 5
    assert out["agreement"]["src"] == pytest.approx(0.6) and out["pairs"]["src"] == 5
    assert out["blind"] == {"src": 1, "mae": 0}
    # MAE: x up/up, y down/up, x down/down, y up/down (no-c's x: nothing moved, left out) -> 2 of 4
    assert out["agreement"]["mae"] == pytest.approx(0.5) and out["pairs"]["mae"] == 4
    assert out["gap"]["x"] == pytest.approx({"src": 0.10, "mae": -0.10})
    assert out["gap"]["y"] == pytest.approx({"src": -0.05, "mae": -0.05})
    assert out["rank_correlation"]["x"]["src"] == pytest.approx(0.9487, abs=1e-4)  # no-c ties the default on validation
    assert out["rank_correlation"]["y"]["src"] == pytest.approx(-0.5)  # ranks 2,3,1 vs 3,1,2


def test_every_built_in_switch_loads_and_changes_the_demo_config():
    from benchmarks.panel import FULL, QUICK, SWITCHES, seed_control
    from pipeline.config import load_config
    for mode in (QUICK, FULL):
        base = load_config("configs/demo.yaml", mode).to_dict()
        for sw in [*SWITCHES, seed_control(1)]:
            if sw.needs_encoders and mode is QUICK:
                continue  # not run under --quick
            assert load_config("configs/demo.yaml", mode + list(sw.overrides)).to_dict() != base, sw.label


def test_a_set_where_the_switch_changed_nothing_is_left_out():
    inert = rows([0.0, 0.02, 0.02], [0.0, 0.01, 0.01])
    inert[0]["inert"] = True  # on a, the switch moved no score: it does not count against "most sets"
    assert verdict(inert, NOISE) == "keep"
    assert verdict([dict(r, inert=True) for r in inert], NOISE) == "no effect"


def judged(refit_check: bool):
    """judge() on made-up scores: a refit-only switch that moves the test and the refit check, not validation."""
    from benchmarks.panel import Switch, judge

    def s(val, test, check):
        return {"val_src": val, "val_mae": 1.0, "test_src": test, "test_mae": 1.1,
                "check_src": check if refit_check else None, "check_mae": 1.05 if refit_check else None}
    scores = {"default": {"x": s(0.5, 0.45, 0.48), "y": s(0.4, 0.35, 0.38)},
              "seed-1": {"x": s(0.49, 0.44, 0.47), "y": s(0.41, 0.36, 0.385)},
              "no-refit": {"x": s(0.5, 0.43, 0.46), "y": s(0.4, 0.34, 0.37)}}
    switch = Switch("no-refit", ("gbdt.refit_kfold=false",), "gbdt.refit_kfold", refit_only=True)
    return judge(scores, [switch], "seed-1")[0][0]


def test_a_refit_only_switch_is_judged_on_the_refit_check_or_called_blind():
    with_check = judged(True)
    assert with_check["judged_on"] == "check"
    # the refit helps the check by 0.02 on both sets, beyond the noise of 0.01 / 0.005; MAE unmoved on both
    assert [r["src"] for r in with_check["check_benefit"]] == pytest.approx([0.02, 0.01])
    assert with_check["verdict"] == "drop"  # MAE's benefit is 0 on both sets: not positive on most
    assert judged(False)["verdict"] == "blind"


def test_merge_judges_rows_of_several_panels_together(tmp_path):
    import json

    from benchmarks.panel import SWITCHES, merged_rows

    def row(label, data_set, v):
        return {"row": label, "data set": data_set, "val_src": v, "val_mae": 1.0, "pipe_src": v, "pipe_mae": 1.0}
    first = {"mode": "full", "overrides": ["a=1"], "rows": [row("default", "x", 0.5), row("no-tuning", "x", 0.4)]}
    second = {"mode": "quick", "overrides": ["b=2"], "rows": [row("default", "x", 0.6), row("default", "y", 0.3),
                                                               row("mine", "y", 0.35)]}
    for name, panel in (("1", first), ("2", second)):
        (tmp_path / f"{name}.json").write_text(json.dumps(panel))
    rows_, switches, overrides, _, _ = merged_rows([tmp_path / "1.json", tmp_path / "2.json"], SWITCHES)
    # x's rows come from the second panel only (its last file); y's too
    assert sorted((r["row"], r["data set"], r["val_src"]) for r in rows_) == [
        ("default", "x", 0.6), ("default", "y", 0.3), ("mine", "y", 0.35)]
    assert [sw.label for sw in switches] == ["mine"] and switches[0].turns == "on"
    assert len(overrides) == 3


def test_steering_splits_the_agreement_by_the_seed_control_noise():
    def s(vs, ts):
        return {"val_src": vs, "val_mae": 1.0, "test_src": ts, "test_mae": 1.0}
    scores = {"default": {"x": s(0.50, 0.40)}, "big": {"x": s(0.60, 0.45)}, "small": {"x": s(0.505, 0.39)}}
    out = steering(scores, "default", ["big", "small"], {"x": {"src": 0.01, "mae": 0.01}})
    assert out["beyond_noise"]["src"] == {"agreement": 1.0, "pairs": 1}  # +0.10 on validation, +0.05 on test
    assert out["within_noise"]["src"] == {"agreement": 0.0, "pairs": 1}  # +0.005 on validation, -0.01 on test
    assert out["beyond_noise"]["mae"]["pairs"] == 0 and out["within_noise"]["mae"]["pairs"] == 0  # nothing moved


def test_the_short_verdict_table_counts_the_judged_score():
    from benchmarks.panel import verdict_summary
    table = verdict_summary([judged(True)])
    row = table.splitlines()[2].split(" | ")
    assert row[2:6] == ["drop", "refit check", "2/2", "0/2"]  # the check's SRC up on both sets, MAE on none
