"""Tuning that resumes to the same result: a config's best comes from its own budget only, and a killed
tune reruns the killed trial in its place."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna

from common.io import read_json
from models import tuning
from pipeline import tune
from tuning_work import TINY, context, make_work_dir

optuna.logging.set_verbosity(optuna.logging.WARNING)
TESTS = Path(__file__).resolve().parent


def test_a_larger_budget_on_the_same_study_never_changes_a_smaller_configs_best(tmp_path):
    make_work_dir(tmp_path, overrides={"tuning": {**TINY["tuning"], "n_trials": 3}})
    a = context(tmp_path, "tuning.n_trials=3")  # (each run saves its config where context() reads it)
    tune.run(a)
    first = read_json(a.best_params)
    summary_a = read_json(a.tuning_summary)

    b = context(tmp_path, "tuning.n_trials=8")  # the budget is not part of the study's name: the same study
    tune.run(b)
    study = optuna.load_study(study_name=first["study_name"], storage=a.study_storage)
    assert len(study.trials) == 8
    assert study.best_trial.number >= 3, "B found nothing better than A's trials: the test would not tell"

    tune.run(context(tmp_path, "tuning.n_trials=3"))  # A again, after B
    again = read_json(a.best_params)
    assert again == first  # the same bytes: best_params.json is train_trees' input
    assert read_json(a.tuning_summary)["trials"] == summary_a["trials"]


KILLED_RUN = """
import os, signal
from pathlib import Path
from models import tuning
from pipeline.tune import prepare
from tuning_work import context

study, objective, url, first, n = prepare(context(Path({work!r})))

def killed_mid_fit(trial):
    if trial.number == {kill_at}:  # SIGKILL after the trial reported its first rounds
        report = trial.report
        def report_then_die(value, step):
            report(value, step)
            if step >= 10:
                os.kill(os.getpid(), signal.SIGKILL)
        trial.report = report_then_die
    return objective(trial)

tuning.run_worker(study, killed_mid_fit, n, storage_url=url, first_params=first)
"""


def finished_trials(study):
    """The study's first 6 finished trials, in number order: (params, value, state)."""
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    return [(t.params, t.value, t.state.name) for t in trials if t.state.name in ("COMPLETE", "PRUNED")][:6]


def test_a_trial_killed_mid_fit_is_rerun_in_its_place_and_the_rerun_reaches_the_same_best(tmp_path, caplog):
    from pipeline.tune import prepare
    for name in ("killed", "whole"):
        make_work_dir(tmp_path / name)  # 6 trials
    # uninterrupted
    study, objective, url, first, n = prepare(context(tmp_path / "whole"))
    tuning.run_worker(study, objective, n, storage_url=url, first_params=first)
    whole = finished_trials(study)
    # killed in trial 2 (the best), mid-fit, by SIGKILL; then the same worker again
    script = KILLED_RUN.format(work=str(tmp_path / "killed"), kill_at=2)
    root = TESTS.parent
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join((str(root), str(TESTS))),
                               "OMP_WAIT_POLICY": "PASSIVE"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    study, objective, url, first, n = prepare(context(tmp_path / "killed"))
    assert [t.state.name for t in study.get_trials()][2] == "RUNNING"
    with caplog.at_level(logging.INFO, logger="models.tuning"):
        tuning.run_worker(study, objective, n, storage_url=url, first_params=first)
    trials = study.get_trials()
    assert trials[2].state.name == "FAIL" and trials[3].params == trials[2].params  # rerun next, not after a new draw
    assert "trial 2 was left running" in caplog.text
    assert finished_trials(study) == whole  # the same draws, pruning decisions and values: the same best


def test_a_worker_that_waits_says_for_what(tmp_path, caplog):
    """Every place taken by a trial of another machine: one line names it and the heartbeat it waits for."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = tuning.open_study(url, "s", "mse", seed=0, startup_trials=2, heartbeat_s=1)
    space = tuning.search_space({"x": [-2.0, 2.0]})
    tuning.run_worker(study, lambda t: tuning.suggest(t, space)["x"] ** 2, 1, storage_url=url)
    other = study.ask({"x": optuna.distributions.FloatDistribution(-2.0, 2.0)})
    other.set_user_attr("worker", "elsewhere")
    other.set_user_attr("machine", "another-host/1")
    other.set_user_attr("pid", 1)
    study._storage.record_heartbeat(other._trial_id)
    with caplog.at_level(logging.INFO, logger="models.tuning"):
        ran = tuning.run_worker(study, lambda t: tuning.suggest(t, space)["x"] ** 2, 2, storage_url=url, poll_s=0.2)
    waits = [r.message for r in caplog.records if "waiting for running trial" in r.message]
    assert len(waits) == 1 and "1 (worker elsewhere, pid 1)" in waits[0] and "2 s old" in waits[0]
    trials = study.get_trials()
    assert ran == 1 and trials[1].state.name == "FAIL" and trials[2].params == trials[1].params
