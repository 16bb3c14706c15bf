"""Optuna tuning: shared trial budget over worker processes, resuming, pruning, reproducibility."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from models import tuning
from models.gbdt import LightGBMRegressor
from models.validation import make_folds
from pipeline.config import load_config
from pipeline.io import write_parquet, write_text
from pipeline.stage import RunContext
from pipeline.train_gbdt import tuned_params

ROOT = Path(__file__).resolve().parent.parent
optuna.logging.set_verbosity(optuna.logging.WARNING)

# small and single-threaded: a busy 2-core machine makes OpenMP threads spin
TINY = {
    "seed": 0,
    "validation": {"scheme": "time_holdout", "holdout_frac": 0.25},
    "metadata": {"target_stat_keys": ["Uid"], "tag_target_stats": False},
    "encoders": {"enabled": False},
    "prototype": {"enabled": False},
    "gbdt": {"params": {"learning_rate": 0.1}, "num_boost_round": 120, "early_stopping_rounds": 20,
             "num_threads": 1, "feature_sets": {"meta": ["meta"]}},
    "tuning": {"enabled": True, "n_trials": 6, "startup_trials": 3, "prune_startup_trials": 2,
               "prune_warmup_rounds": 20, "report_interval": 10,
               "search_space": {"num_leaves": [4, 32, "log"], "min_data_in_leaf": [5, 60, "log"],
                                "feature_fraction": [0.5, 1.0]}},
}


def make_work_dir(work: Path, n: int = 800, seed: int = 0, overrides: dict | None = None) -> Path:
    """Posts, folds and a `meta` feature block of a synthetic data set, and the config the workers read."""
    rng = np.random.default_rng(seed)
    n_test = 50
    total = n + n_test
    X = rng.normal(size=(total, 6))
    uid = rng.integers(0, 40, total).astype(str)
    label = 2 * X[:, 0] + np.sin(2 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.normal(0, 0.7, total)
    posts = pd.DataFrame({"Pid": [str(i) for i in range(total)], "Uid": uid, "Alltags": "",
                          "Postdate": np.arange(total, dtype=np.int64), "label": label})
    for split, rows in (("train", slice(0, n)), ("test", slice(n, total))):
        part = posts.iloc[rows].reset_index(drop=True)
        write_parquet(work / f"posts_{split}.parquet", part if split == "train" else part.drop(columns="label"))
        meta = pd.DataFrame(X[rows], columns=[f"meta_x{j}" for j in range(X.shape[1])])
        write_parquet(work / "features" / f"meta_{split}.parquet", pd.concat([part[["Pid"]], meta], axis=1))
    config = {**TINY, **(overrides or {})}
    cfg_path = work / "tuning" / "config.yaml"
    write_text(cfg_path, yaml.safe_dump(config))
    cfg = load_config(cfg_path)
    v = cfg.validation
    write_parquet(work / "folds.parquet", make_folds(posts.iloc[:n], v.scheme, v.n_folds, v.seed, v.holdout_frac))
    return cfg_path


def context(work: Path, *overrides: str) -> RunContext:
    cfg = load_config(work / "tuning" / "config.yaml", list(overrides))
    return RunContext(config=cfg, data_dir=work / "data", work_dir=work, run_name="test")


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
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    workers = [subprocess.Popen([sys.executable, str(ROOT / "pipeline" / "tune.py"), "--work-dir", str(tmp_path),
                                 "--worker", name], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for name in ("a", "b")]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    for w, log in zip(workers, logs):
        assert w.returncode == 0, log[-3000:]

    from pipeline.tune import prepare, storage_url
    ctx = context(tmp_path)
    study = optuna.load_study(study_name=prepare(ctx)[0].study_name, storage=storage_url(ctx))
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
                            lock_path=tuning.budget_lock_path(url), first_params={"x": 1.5})
    again = tuning.open_study(url, "s", "mse", seed=3, startup_trials=2)
    assert ran == 5 and len(again.trials) == 5 and again.trials[0].params == {"x": 1.5}
    assert tuning.run_worker(again, lambda t: 0.0, 5, lock_path=tuning.budget_lock_path(url)) == 0
    assert tuning.redact("postgresql://tuner:secret@db.example:5432/optuna") == \
        "postgresql://tuner:***@db.example:5432/optuna"
    assert tuning.redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


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
        tuning.run_worker(study, interrupted, 6, lock_path=tuning.budget_lock_path(url), first_params=first)
    before = {t.number: (t.params, t.value, t.state) for t in study.get_trials()}
    assert [s.name for _, _, s in before.values()].count("FAIL") == 1 and len(before) == 4

    study, objective, url, first, _ = prepare(context(tmp_path))  # a new process would do the same
    ran = tuning.run_worker(study, objective, 6, lock_path=tuning.budget_lock_path(url), first_params=first)
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
        tuning.run_worker(study, objective, 4, lock_path=tuning.budget_lock_path(url), first_params=first)
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
