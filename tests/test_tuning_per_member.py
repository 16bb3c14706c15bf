"""tuning.per_member: a study per LightGBM member within one trial budget, and train_trees applying each one's own."""
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from models import tuning
from pipeline import train_trees, tune
from common.io import read_json, write_json, write_parquet
from tuning_work import TINY, config_folder, context, make_work_dir, run_tune_workers

FINISHED = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
optuna.logging.set_verbosity(optuna.logging.WARNING)

# two LightGBM members: `meta`, and `meta_emb` with an extra block (`emb` is active when the encoders are on)
TWO_MEMBERS = {
    "encoders": {"enabled": True}, "users": {"text_dims": 0},
    "gbdt": {**TINY["gbdt"], "seeds": [0], "feature_sets": {"meta": ["meta"], "meta_emb": ["meta", "emb"]}},
}


def two_member_work_dir(work: Path, per_member: bool, n_trials: int = 7) -> Path:
    make_work_dir(work, overrides={**TWO_MEMBERS, "tuning": {**TINY["tuning"], "n_trials": n_trials,
                                                             "per_member": per_member, "adapt_to_size": False}})
    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        pid = pd.read_parquet(work / f"posts_{split}.parquet", columns=["Pid"])
        label = (pd.read_parquet(work / "posts_train.parquet", columns=["label"])["label"].to_numpy()
                 if split == "train" else np.zeros(len(pid)))
        emb = pd.DataFrame({"emb_0": label + rng.normal(0, 1.5, len(pid)), "emb_1": rng.normal(size=len(pid))})
        write_parquet(config_folder(work) / "features" / f"emb_{split}.parquet", pd.concat([pid, emb], axis=1))
    return work


def studies_in(ctx) -> dict[str, optuna.Study]:
    url = ctx.study_storage
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=url)
            for s in optuna.get_all_study_summaries(storage=url)}


def test_the_budget_split_is_exact_and_gives_the_first_member_the_most():
    for n_trials in range(3, 80):
        for members in (["a"], ["a", "b"], ["a", "b", "c"], list("abcde")[:min(5, n_trials)]):
            for share in (0.2, 0.5, 0.9, 1.0):
                budgets = tuning.split_trial_budget(n_trials, members, share)
                assert list(budgets) == members and sum(budgets.values()) == n_trials
                assert min(budgets.values()) >= 1
                assert share < 0.5 or budgets["a"] == max(budgets.values())
                later = [budgets[m] for m in members[1:]]
                assert not later or max(later) - min(later) <= 1  # the rest is split evenly
    assert tuning.split_trial_budget(10, ["meta", "meta_emb", "meta_emb_proto"]) == \
        {"meta": 5, "meta_emb": 3, "meta_emb_proto": 2}
    assert tuning.split_trial_budget(10, ["meta"]) == {"meta": 10}
    with pytest.raises(ValueError, match="tuning.n_trials: 2 trials cannot give each of the 3"):
        tuning.split_trial_budget(2, ["a", "b", "c"])
    with pytest.raises(ValueError, match="per_member_first_share"):
        tuning.split_trial_budget(10, ["a", "b"], 0.0)


def test_each_member_is_tuned_in_its_share_of_the_budget_and_trained_with_its_own_parameters(tmp_path):
    ctx = context(two_member_work_dir(tmp_path, per_member=True, n_trials=7))
    tune.run(ctx)
    studies = studies_in(ctx)
    by_member = {s.user_attrs["feature_set"]: s for s in studies.values()}
    assert sorted(by_member) == ["meta", "meta_emb"] and len(studies) == 2
    meta, emb = (by_member[m].get_trials() for m in ("meta", "meta_emb"))
    assert [len(meta), len(emb)] == [4, 3] and all(t.state in FINISHED for t in meta + emb)  # 7 = 4 + 3, exactly
    base = tuning.base_trial_params(ctx.config.gbdt.params, tuning.search_space(ctx.config.tuning.search_space))
    assert meta[0].params == base and meta[0].user_attrs["base"]
    # the later member starts from the first's best, then the hand-set parameters (when they differ)
    assert emb[0].params == by_member["meta"].best_params and emb[0].user_attrs["warm_start"]
    assert emb[1].params == base or by_member["meta"].best_params == base

    best = read_json(ctx.best_params)
    assert best["params"] == by_member["meta"].best_params  # the first member's, as without per_member
    assert {m: v["params"] for m, v in best["members"].items()} == \
        {m: s.best_params for m, s in by_member.items()}
    assert {m: v["n_trials"] for m, v in best["members"].items()} == {"meta": 4, "meta_emb": 3}

    train_trees.STAGE.run(ctx)
    for member in ("meta", "meta_emb"):
        trained = read_json(ctx.member_preds(member).with_suffix(".json"))
        assert trained["params"] == {**ctx.config.gbdt.params, **best["members"][member]["params"]}


def test_train_trees_uses_a_member_s_own_parameters_and_the_shared_ones_for_the_others(tmp_path):
    ctx = context(two_member_work_dir(tmp_path, per_member=True))
    write_json(ctx.best_params, {"params": {"num_leaves": 5, "min_data_in_leaf": 40},
                                            "members": {"meta_emb": {"params": {"num_leaves": 9}}}})
    train_trees.STAGE.run(ctx)
    params = {m: read_json(ctx.member_preds(m).with_suffix(".json"))["params"] for m in ("meta", "meta_emb")}
    assert params["meta"] == {**ctx.config.gbdt.params, "num_leaves": 5, "min_data_in_leaf": 40}
    assert params["meta_emb"] == {**ctx.config.gbdt.params, "num_leaves": 9}


def test_with_the_switch_off_one_study_tunes_the_feature_set_for_every_member_as_before(tmp_path):
    ctx = context(two_member_work_dir(tmp_path / "stage", per_member=False, n_trials=5))
    tune.run(ctx)
    (study,) = studies_in(ctx).values()
    # the single-study path as the stage ran it before per_member: prepare, then one worker on the whole budget
    old_ctx = context(two_member_work_dir(tmp_path / "old", per_member=False, n_trials=5))
    old_study, objective, url, first, n_trials = tune.prepare(old_ctx)
    tuning.run_worker(old_study, objective, n_trials, storage_url=url, first_params=first)
    assert study.study_name == old_study.study_name and study.user_attrs["feature_set"] == "meta"
    assert "-meta-" not in study.study_name  # the name (and so the trials) of the study before the switch
    assert [(t.params, t.value, t.state, t.user_attrs.get("base")) for t in study.get_trials()] == \
        [(t.params, t.value, t.state, t.user_attrs.get("base")) for t in old_study.get_trials()]
    assert [t.user_attrs["base"] for t in study.get_trials()] == [True, False, False, False, False]
    best = read_json(ctx.best_params)
    assert "members" not in best and best["params"] == study.best_params
    train_trees.STAGE.run(ctx)
    for member in ("meta", "meta_emb"):
        trained = read_json(ctx.member_preds(member).with_suffix(".json"))
        assert trained["params"] == {**ctx.config.gbdt.params, **study.best_params}


def test_two_worker_processes_keep_each_member_s_exact_budget(tmp_path):
    two_member_work_dir(tmp_path, per_member=True, n_trials=8)
    run_tune_workers(tmp_path, ("a", "b"))
    by_member = {s.user_attrs["feature_set"]: s for s in studies_in(context(tmp_path)).values()}
    trials = {m: s.get_trials() for m, s in by_member.items()}
    assert {m: len(t) for m, t in trials.items()} == {"meta": 4, "meta_emb": 4}
    assert all(t.state in FINISHED for ts in trials.values() for t in ts)
    assert {t.user_attrs["worker"] for ts in trials.values() for t in ts} == {"a", "b"}
    # both workers read the same finished first study: one warm start, the first member's best
    warm = [t for t in trials["meta_emb"] if t.user_attrs.get("warm_start")]
    assert len(warm) == 1 and warm[0].params == by_member["meta"].best_params
