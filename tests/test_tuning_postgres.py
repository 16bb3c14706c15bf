"""Tuning across processes on a real PostgreSQL server: one study, one trial budget, a worker that dies.

The server is $SMP_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres); its user
must be allowed to create databases. Each test tunes in a database of its own, dropped afterwards.
In CI (CI=true) a missing server is a failure; elsewhere these tests skip, saying how to run them.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy

from models import tuning
from tiny_demo import OPTIONAL_OFF, TINY_DEMO
from tuning_work import TINY, make_work_dir, run_tune_workers, worker_command

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("SMP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
FINISHED = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def new_database():
    """A factory of fresh databases on the server (URLs); all are dropped when the module ends."""
    try:
        admin = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT",
                                         connect_args={"connect_timeout": 5})
        with admin.connect():
            pass
    except Exception as err:  # noqa: BLE001 - no driver, no server, refused: all mean "cannot run here"
        message = (f"no PostgreSQL server at {tuning.redact(ADMIN_URL)} ({type(err).__name__}: {err}). "
                   "Start one with trust authentication (e.g. `docker run -d -p 5432:5432 "
                   "-e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`) or set SMP_TEST_POSTGRES_URL to a "
                   "server whose user may create databases")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL tests: {message}")
        pytest.skip(message)
    made = []

    def make() -> str:
        name = f"smp_tune_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as connection:
        for name in made:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def only_study(url: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(storage=url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def assert_exact_budget(trials: list, n_trials: int) -> None:
    finished = [t for t in trials if t.state in FINISHED]
    numbers = [t.number for t in finished]
    assert len(numbers) == len(set(numbers)), "a trial number finished twice"
    assert len(finished) == n_trials, f"{len(finished)} trials finished for a budget of {n_trials}"
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]


# --- the budget lock under contention -------------------------------------------------------------------
def contending_worker(url: str, rounds: int, n_trials: int, name: str, start, results) -> None:
    """A worker process (forked: no second import) that joins each round's study on the barrier."""
    space = tuning.search_space({"x": [-2.0, 2.0]})

    def objective(trial):
        time.sleep(0.02)
        return (tuning.suggest(trial, space)["x"] - 0.5) ** 2

    for round_ in range(rounds):
        study = tuning.open_study(url, f"contended-{round_}", "mse", seed=0, startup_trials=3)
        start.wait(timeout=120)
        results.put((round_, name, tuning.run_worker(study, objective, n_trials, storage_url=url, worker=name,
                                                     progress=False, poll_s=0.05)))


def test_contending_workers_run_exactly_the_budget(new_database):
    """More workers than places, starting at one instant: without the advisory lock they all see an
    empty budget and the study overshoots it (with the lock taken out: 5 trials for a budget of 3)."""
    url, rounds, n_trials, names = new_database(), 3, 3, ["w0", "w1", "w2", "w3", "w4"]
    fork = multiprocessing.get_context("fork")
    start, results = fork.Barrier(len(names)), fork.Queue()
    workers = [fork.Process(target=contending_worker, args=(url, rounds, n_trials, name, start, results))
               for name in names]
    for w in workers:
        w.start()
    ran = [results.get(timeout=240) for _ in range(rounds * len(names))]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0

    for round_ in range(rounds):
        trials = optuna.load_study(study_name=f"contended-{round_}", storage=url).get_trials()
        assert_exact_budget(trials, n_trials)
        assert sorted(t.number for t in trials) == list(range(n_trials))
        by_worker = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts().to_dict()
        assert by_worker == {name: count for r, name, count in ran if r == round_ and count}


# --- a worker killed in the middle of a trial --------------------------------------------------------------
# a running trial of the worker with a heartbeat and its parameters drawn: its LightGBM fit has begun
FITTING_TRIAL_OF = sqlalchemy.text(
    "SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
    "WHERE t.state = 'RUNNING' AND a.key = 'worker' AND a.value_json = :worker "
    "AND (SELECT count(*) FROM trial_params p WHERE p.trial_id = t.trial_id) = :n_params")


def test_a_killed_worker_s_trial_is_failed_and_retried_and_the_budget_is_reached(new_database, tmp_path):
    url, n_trials = new_database(), 6
    # trials of about a second (a fixed 400 rounds, no pruning) so that the kill lands inside one
    make_work_dir(tmp_path, n=3000, overrides={
        "gbdt": {**TINY["gbdt"], "num_boost_round": 400, "early_stopping_rounds": 400},
        "tuning": {**TINY["tuning"], "n_trials": n_trials, "pruning": False, "storage": url, "heartbeat_s": 1}})
    workers = {name: subprocess.Popen(worker_command(tmp_path, name), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
               for name in ("victim", "survivor")}
    engine = sqlalchemy.create_engine(url)
    n_params = len(TINY["tuning"]["search_space"])
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and workers["victim"].poll() is None:
        try:
            with engine.connect() as connection:
                killed = connection.execute(FITTING_TRIAL_OF, {"worker": '"victim"', "n_params": n_params}).scalar()
        except sqlalchemy.exc.ProgrammingError:  # the tables are not there yet
            pass
        if killed is None:
            time.sleep(0.05)
    workers["victim"].send_signal(signal.SIGKILL)
    victim_log = workers["victim"].communicate(timeout=60)[0]
    engine.dispose()
    assert killed is not None, f"the victim never ran a trial with a heartbeat:\n{victim_log[-3000:]}"
    survivor_log = workers["survivor"].communicate(timeout=240)[0]
    assert workers["survivor"].returncode == 0, survivor_log[-3000:]

    trials = only_study(url).get_trials()
    dead = trials[killed]
    assert dead.state == optuna.trial.TrialState.FAIL, "the killed worker's trial was not failed"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]  # set by Optuna's retry
    assert retry.params == dead.params and retry.state in FINISHED and retry.user_attrs["worker"] == "survivor"
    assert_exact_budget(trials, n_trials)
    assert len(trials) == n_trials + 1  # the budget's trials and the failed one


# --- workers beside run_all.py, and the same study with one worker -----------------------------------
N_TRIALS, STARTUP = 20, 10
RUN = [*TINY_DEMO, *OPTIONAL_OFF, "--set", "tuning.enabled=true", "--set", f"tuning.n_trials={N_TRIALS}",
       "--set", f"tuning.startup_trials={STARTUP}", "--set", "gbdt.num_threads=1",
       "--set", "tuning.adapt_to_size=false",  # the tiny demo would cap the budget at a trial per 20 validated posts
       "--set", "gbdt.num_boost_round=80", "--set", "gbdt.early_stopping_rounds=20",
       "--set", "tuning.prune_warmup_rounds=20", "--set", "tuning.report_interval=20",
       "--stages", "make_demo,read_data,make_folds,build_metadata,adversarial,tune,train_trees,train_linear,blend,submit"]


@pytest.fixture(scope="module")
def one_and_three_workers(new_database, tmp_path_factory):
    """The tiny demo run twice: one tuning worker, and three (the stage's two and one tune.py started beside it)."""
    base = tmp_path_factory.mktemp("pg_runs")
    runs = {}
    for name, workers in (("one", 1), ("three", 2)):
        url = new_database()
        args = [sys.executable, str(ROOT / "pipeline" / "run_all.py"), "--work-dir", str(base / name),
                "--submissions-dir", str(base / "submissions"), "--run-name", name, *RUN,
                "--set", f"tuning.storage={url}", "--set", f"tuning.workers={workers}"]
        runs[name] = {"url": url, "work": base / name,
                      "proc": subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)}
    # the extra worker joins once the stage has saved its config in the run's config folder
    # (work/config-<digest>/tuning/config.yaml), as a worker on another machine would
    deadline = time.monotonic() + 300
    while (not (configs := list((base / "three").glob("config-*/tuning/config.yaml")))
           and runs["three"]["proc"].poll() is None and time.monotonic() < deadline):
        time.sleep(0.1)
    assert configs, "the tune stage of the three-worker run never saved its config"
    # the data set's folder and the config the stage saved name its config folder
    extra = subprocess.Popen([sys.executable, str(ROOT / "pipeline" / "tune.py"), "--work-dir", str(base / "three"),
                              "--config", str(configs[0]), "--worker", "beside"], cwd=ROOT, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for run in runs.values():
        run["log"] = run["proc"].communicate(timeout=600)[0]
        assert run["proc"].returncode == 0, run["log"][-4000:]
    extra_log = extra.communicate(timeout=300)[0]
    assert extra.returncode == 0, extra_log[-3000:]
    for name, run in runs.items():
        run["trials"] = only_study(run["url"]).get_trials()
        run["submission"] = (base / "submissions" / name / "submission.csv").read_bytes()
        run["best_params"] = tuning.study_summary(only_study(run["url"]), "src")["best_params"]
    return runs


def test_workers_beside_run_all_share_one_budget(one_and_three_workers):
    for run in one_and_three_workers.values():
        assert_exact_budget(run["trials"], N_TRIALS)
        assert len(run["trials"]) == N_TRIALS
    workers = {t.user_attrs["worker"] for t in one_and_three_workers["three"]["trials"]}
    assert workers <= {"0", "1", "beside"} and len(workers) >= 2, f"trials ran on {workers}"


def test_more_workers_keep_the_start_up_trials_and_differ_only_where_the_readme_says(one_and_three_workers):
    one, three = (one_and_three_workers[k]["trials"] for k in ("one", "three"))
    # the start-up trials draw from (seed, trial number) alone: the same parameters in both runs
    assert [t.params for t in one[:STARTUP]] == [t.params for t in three[:STARTUP]]
    both_complete = [n for n in range(STARTUP) if one[n].state == three[n].state == optuna.trial.TrialState.COMPLETE]
    assert 0 in both_complete  # the hand-set parameters: no finished trial to prune against yet
    assert [one[n].value for n in both_complete] == [three[n].value for n in both_complete]
    # the final submission is a function of the best parameters: equal where they are equal
    same_best = one_and_three_workers["one"]["best_params"] == one_and_three_workers["three"]["best_params"]
    same_submission = one_and_three_workers["one"]["submission"] == one_and_three_workers["three"]["submission"]
    assert same_best == same_submission


# --- a study per member (tuning.per_member) on the server -------------------------------------------
def test_workers_on_per_member_studies_keep_each_member_s_exact_budget(new_database, tmp_path):
    from test_tuning_per_member import two_member_work_dir
    url = new_database()
    two_member_work_dir(tmp_path, per_member=True, n_trials=9)
    run_tune_workers(tmp_path, ("a", "b", "c"), "--set", f"tuning.storage={url}")
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=url)
               for s in optuna.get_all_study_summaries(storage=url)}
    by_member = {s.user_attrs["feature_set"]: s for s in studies.values()}
    assert sorted(by_member) == ["meta", "meta_emb"]
    assert_exact_budget(by_member["meta"].get_trials(), 5)  # 9 trials: 5 for the first member, 4 for the other
    assert_exact_budget(by_member["meta_emb"].get_trials(), 4)
    warm = [t for t in by_member["meta_emb"].get_trials() if t.user_attrs.get("warm_start")]
    assert len(warm) == 1 and warm[0].params == by_member["meta"].best_params
