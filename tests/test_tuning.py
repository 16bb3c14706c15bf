"""Optuna tuning: shared trial budget over worker processes, resuming, pruning, reproducibility."""

import numpy as np
import optuna
import pandas as pd
import pytest

from models import tuning
from models.gbdt import LightGBMRegressor
from models.validation import make_folds
from pipeline.members import tuned_params
from tuning_work import TINY, context, make_work_dir, run_tune_workers

optuna.logging.set_verbosity(optuna.logging.WARNING)

def test_search_space_from_config():
    space = tuning.search_space({"num_leaves": [7, 255, "log"], "lambda_l2": [1e-3, 10.0, "log"],
                                 "feature_fraction": [0.3, 1]})
    assert isinstance(space["num_leaves"], optuna.distributions.IntDistribution) and space["num_leaves"].log
    assert isinstance(space["feature_fraction"], optuna.distributions.FloatDistribution)
    assert not space["feature_fraction"].log
    for bad in ({"a": [1]}, {"a": [2, 1]}, {"a": [0.0, 1.0, "log"]}, {"a": [1, 2, "exp"]}, {}):
        with pytest.raises(ValueError):
            tuning.search_space(bad)
    # trial 0 evaluates the hand-set parameters, clipped into the space
    point = tuning.base_trial_params({"num_leaves": 300, "feature_fraction": 0.8}, space)
    assert point == {"num_leaves": 255, "feature_fraction": 0.8, "lambda_l2": 1e-3}


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    make_work_dir(tmp_path, n=1000, overrides={"tuning": {**TINY["tuning"], "n_trials": 10}})
    run_tune_workers(tmp_path, ("a", "b"), timeout=300)

    from pipeline.tune import prepare
    ctx = context(tmp_path)
    study = optuna.load_study(study_name=prepare(ctx)[0].study_name, storage=ctx.study_storage)
    trials = study.get_trials()
    assert len(trials) == 10  # exactly the budget between them
    assert sorted(t.number for t in trials) == list(range(10))
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "two trials drew the same parameters"
    by_worker = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts()
    assert set(by_worker.index) == {"a", "b"}, f"both workers should have run trials: {by_worker.to_dict()}"
    assert sum(t.user_attrs.get("base", False) for t in trials) == 1  # the hand-set parameters once


def test_journal_storage_budget_and_redacted_urls(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    study = tuning.open_study(url, "s", "mse", seed=3, startup_trials=2)
    space = tuning.search_space({"x": [-2.0, 2.0]})
    ran = tuning.run_worker(study, lambda t: tuning.suggest(t, space)["x"] ** 2, 5,
                            storage_url=url, first_params={"x": 1.5})
    again = tuning.open_study(url, "s", "mse", seed=3, startup_trials=2)
    assert ran == 5 and len(again.trials) == 5 and again.trials[0].params == {"x": 1.5}
    assert tuning.run_worker(again, lambda t: 0.0, 5, storage_url=url) == 0
    assert tuning.redact("postgresql://tuner:secret@db.example:5432/optuna") == \
        "postgresql://tuner:***@db.example:5432/optuna"
    assert tuning.redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_a_trial_failed_by_another_worker_while_it_ran_is_not_a_crash(tmp_path, caplog):
    """A heartbeat later than the grace period: another worker fails the trial (and queues it again)
    while it still runs. This worker warns and goes on; the budget is still reached."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = tuning.open_study(url, "s", "mse", seed=0, startup_trials=2, heartbeat_s=1)
    space = tuning.search_space({"x": [-2.0, 2.0]})

    def objective(trial):
        x = tuning.suggest(trial, space)["x"]
        if trial.number == 1:  # what the other worker's fail_stale_trials does to a stalled trial
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
        return x ** 2

    ran = tuning.run_worker(study, objective, 4, storage_url=url)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"] and ran == 4
    assert study.trials[2].params == study.trials[1].params  # the queued rerun
    assert "raise tuning.heartbeat_s" in caplog.text


class Interrupt(Exception):
    pass


def test_an_interrupted_study_resumes_with_its_finished_trials(tmp_path):
    from pipeline.tune import prepare, write_results
    make_work_dir(tmp_path)
    ctx = context(tmp_path)
    study, objective, url, first, _ = prepare(ctx)

    def interrupted(trial):
        if trial.number == 3:
            raise Interrupt("killed")  # like Ctrl-C in the middle of a trial
        return objective(trial)

    with pytest.raises(Interrupt):
        tuning.run_worker(study, interrupted, 6, storage_url=url, first_params=first)
    before = {t.number: (t.params, t.value, t.state) for t in study.get_trials()}
    assert [s.name for _, _, s in before.values()].count("FAIL") == 1 and len(before) == 4

    study, objective, url, first, _ = prepare(context(tmp_path))  # a new process would do the same
    ran = tuning.run_worker(study, objective, 6, storage_url=url, first_params=first)
    after = study.get_trials()
    finished = [t for t in after if t.state.is_finished() and t.state.name != "FAIL"]
    assert ran == 3 and len(finished) == 6  # the failed trial's place went to a new one
    for number, (params, value, state) in before.items():
        assert (after[number].params, after[number].value, after[number].state) == (params, value, state)
    new = [tuple(sorted(t.params.items())) for t in after[4:]]
    old = [tuple(sorted(p.items())) for p, _, _ in before.values()]
    assert not set(new) & set(old), "the resumed run repeated earlier draws"

    write_results(ctx, study, url, 1.0, 6)
    params = tuned_params(ctx)
    assert params["learning_rate"] == 0.1 and params["num_leaves"] == study.best_params["num_leaves"]


def test_one_worker_is_reproducible_and_a_changed_objective_gets_its_own_study(tmp_path):
    from pipeline.tune import prepare
    values = []
    for name in ("one", "two"):
        make_work_dir(tmp_path / name, overrides={"tuning": {**TINY["tuning"], "n_trials": 4}})
        study, objective, url, first, _ = prepare(context(tmp_path / name))
        tuning.run_worker(study, objective, 4, storage_url=url, first_params=first)
        values.append([(t.params, t.value, t.state) for t in study.get_trials()])
    assert values[0] == values[1]
    names = {prepare(context(tmp_path / "one", *o))[0].study_name
             for o in [(), ("tuning.n_trials=50",), ("gbdt.num_boost_round=90",)]}
    assert len(names) == 2  # the budget continues a study; the objective's settings start a new one


def test_pruning_stops_a_hopeless_trial_early(tmp_path):
    rng = np.random.default_rng(1)
    n = 1200
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"x{j}" for j in range(5)])
    y = 2 * X["x0"].to_numpy() + rng.normal(0, 0.5, n)
    folds = make_folds(pd.DataFrame({"Pid": np.arange(n).astype(str), "Uid": "u", "Postdate": np.arange(n)}),
                       "time_holdout", 5, 0, 0.25)
    space = tuning.search_space({"num_leaves": [4, 16, "log"]})
    kwargs = dict(num_boost_round=400, early_stopping_rounds=400, num_threads=1, report_interval=10)
    good = tuning.lightgbm_objective(X, y, folds, space, {"learning_rate": 0.05}, **kwargs)
    hopeless = tuning.lightgbm_objective(X, rng.permutation(y), folds, space, {"learning_rate": 0.05}, **kwargs)
    study = optuna.create_study(direction="maximize", sampler=tuning.TrialSeededTPESampler(0),
                                pruner=tuning.make_pruner(startup_trials=2, warmup_rounds=30))
    study.optimize(good, n_trials=2)
    study.optimize(hopeless, n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert max(trial.intermediate_values) <= 40  # stopped right after the warm-up, not at round 400
    assert all(max(t.intermediate_values) == 400 for t in study.trials[:2])

    # the same callback on the MSE objective (minimised) prunes too
    study = optuna.create_study(direction="minimize", pruner=tuning.make_pruner(1, 30))
    study.add_trial(optuna.trial.create_trial(value=0.3, intermediate_values={s: 0.3 for s in range(10, 401, 10)}))
    trial = study.ask()
    model = LightGBMRegressor({"learning_rate": 0.05}, 400, 400, 1, callbacks=[tuning.PruningCallback(trial, "mse")])
    with pytest.raises(optuna.TrialPruned):
        model.fit(X.iloc[:900], rng.permutation(y[:900]), X.iloc[900:], y[900:])


def test_trials_with_constant_predictions_complete_with_src_zero(tmp_path):
    """A leaf needs more posts than a fold has: every tree is a single leaf and the prediction a constant,
    whose Spearman correlation scipy calls NaN (Optuna: 'The value nan is not acceptable')."""
    from pipeline.tune import prepare, write_results
    space = {"num_leaves": [4, 8], "min_data_in_leaf": [500, 600]}
    # the size rules (gbdt.adapt_to_size) would cap the leaf size at a tenth of the fit rows: off here
    make_work_dir(tmp_path, n=200, overrides={"tuning": {**TINY["tuning"], "n_trials": 3, "search_space": space},
                                              "gbdt": {**TINY["gbdt"], "adapt_to_size": False}})
    ctx = context(tmp_path)
    study, objective, url, first, _ = prepare(ctx)
    ran = tuning.run_worker(study, objective, 3, storage_url=url, first_params=first)
    trials = study.get_trials()
    assert ran == 3 and [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert [t.value for t in trials] == [0.0] * 3
    assert write_results(ctx, study, url, 1.0, 3)["best_value"] == 0.0


def test_a_worker_whose_trials_all_fail_stops_instead_of_retrying_for_ever(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    study = tuning.open_study(url, "s", "src", seed=0, startup_trials=1)
    space = tuning.search_space({"x": [0.0, 1.0]})
    with pytest.raises(RuntimeError, match="the last 3 trials failed"):
        tuning.run_worker(study, lambda t: float("nan") * tuning.suggest(t, space)["x"], 2,
                          storage_url=url)
    assert [t.state.name for t in study.get_trials()] == ["FAIL"] * 3
