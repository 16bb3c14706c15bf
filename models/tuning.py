"""Optuna tuning of LightGBM on the shared validation folds.

The objective runs `models.cv.cross_fit`, so a trial validates exactly like the
final model (same folds, target statistics recomputed inside each fit, early
stopping on the validation fold's selection posts), and scores on the selection
posts: the report slice of models/validation.py never scores a trial. A LightGBM callback reports the validation
score every few boosting rounds so that the pruner can stop a hopeless trial.

The study lives in Optuna's own storage (SQLite, PostgreSQL/MySQL, or a journal
file): several worker processes, on one machine or several, tune one study, and
an interrupted study resumes with its finished trials. Two details keep that
exact and reproducible:
- the trial budget counts finished and running trials over all workers, checked
  under a lock that is held until the new trial is RUNNING (a file lock for file
  storages, an advisory lock on a PostgreSQL server), so the workers run exactly
  `n_trials` between them; a worker that died mid-trial is noticed by its missing
  heartbeat, and its trial is failed and queued once more for the others;
- the sampler's random state is a function of (seed, trial number), not of the
  process: a resumed study or a second worker never repeats another trial's draws,
  and one worker alone gives the same trials on every run.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import sqlalchemy
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from common.locks import FileLock
from models.cv import TargetStatSpec, cross_fit
from models.gbdt import LightGBMRegressor
from models.metrics import ChallengeScore, challenge_score, mse, src
from models.validation import selection_rows

log = logging.getLogger(__name__)

# challenge: models.metrics.challenge_score, the challenge's SRC and MAE in one number
METRICS = {"src": "maximize", "mse": "minimize", "challenge": "maximize"}
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


# --- search space ------------------------------------------------------------------------
def search_space(space: dict[str, Sequence]) -> dict[str, BaseDistribution]:
    """Optuna distributions from the config form `name: [low, high]` or `[low, high, "log"]`.

    Integer bounds give an integer parameter (e.g. num_leaves: [7, 255, log]).
    """
    if not space:
        raise ValueError("tuning.search_space is empty: name at least one parameter to tune")
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.items():
        where = f"tuning.search_space.{name}"
        if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3):
            raise ValueError(f"{where}: expected [low, high] or [low, high, log], got {spec!r}")
        low, high = spec[0], spec[1]
        log_scale = len(spec) == 3
        if log_scale and spec[2] != "log":
            raise ValueError(f"{where}: the third entry may only be 'log', got {spec[2]!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ValueError(f"{where}: bounds must be numbers with low < high, got {low!r}, {high!r}")
        if log_scale and low <= 0:
            raise ValueError(f"{where}: a log-scale range needs low > 0, got {low!r}")
        if isinstance(low, int) and isinstance(high, int):
            out[name] = IntDistribution(low, high, log=log_scale)
        else:
            out[name] = FloatDistribution(float(low), float(high), log=log_scale)
    return out


# LightGBM's own defaults, for a tuned parameter that the base parameters leave out
LIGHTGBM_DEFAULTS = {"num_leaves": 31, "min_data_in_leaf": 20, "feature_fraction": 1.0, "bagging_fraction": 1.0,
                     "lambda_l1": 0.0, "lambda_l2": 0.0, "learning_rate": 0.1, "min_sum_hessian_in_leaf": 1e-3,
                     "min_gain_to_split": 0.0, "max_bin": 255, "feature_fraction_bynode": 1.0}


def base_trial_params(base_params: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The hand-set parameters as a point of the search space (clipped to its bounds), for trial 0.

    Evaluating them first means the tuned result is never worse on validation than
    the untuned model. A parameter neither set nor in LIGHTGBM_DEFAULTS is left to the sampler.
    """
    point = {}
    for name, dist in space.items():
        value = base_params.get(name, LIGHTGBM_DEFAULTS.get(name))
        if value is None:
            continue
        value = min(max(value, dist.low), dist.high)
        point[name] = int(round(value)) if isinstance(dist, IntDistribution) else float(value)
    return point


def suggest(trial: optuna.Trial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    params = {}
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return params


# --- sampler -------------------------------------------------------------------------------
def is_retry(trial: FrozenTrial) -> bool:
    """A rerun of a trial whose worker died (queued by the heartbeat or by `fail_dead_local_trials`)."""
    return "failed_trial" in trial.system_attrs


def budget_place(study: optuna.Study, number: int) -> int:
    """The place of trial `number` in the study's sequence: its number less the reruns of dead trials before it.

    A rerun takes its dead trial's place, so the trials after it get the places (and the draws) they
    have in a run that was never interrupted. Places of sampled trials are distinct: between two of
    them lies at least the first one, which is no rerun.
    """
    return number - sum(is_retry(t) for t in study.get_trials(deepcopy=False) if t.number < number)


class TrialSeededTPESampler(BaseSampler):
    """TPE whose random state is seeded by (seed, the trial's place, `budget_place`).

    A plain `TPESampler(seed=s)` draws the same sequence in every process that
    creates it: two workers, or a resumed run, would repeat the first trials'
    parameters. Trial numbers are unique in a study (the storage assigns them),
    so seeding from them gives distinct draws everywhere and the same draws for
    the same trial and history; the place is the number, less the reruns of dead
    trials, so a resumed run draws what the uninterrupted run drew.
    """

    def __init__(self, seed: int, n_startup_trials: int = 10):
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._per_trial: dict[int, TPESampler] = {}

    def _sampler(self, study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> TPESampler:
        number = trial.number
        if number not in self._per_trial:
            place = budget_place(study, number)
            seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{place}".encode()).digest()[:4], "little")
            self._per_trial[number] = TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                                 multivariate=True, constant_liar=True)
        return self._per_trial[number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler(study, trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler(study, trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler(study, trial).after_trial(study, trial, state, values)
        del self._per_trial[trial.number]

    def reseed_rng(self) -> None:  # the seed is per trial already
        pass


# --- pruning --------------------------------------------------------------------------------
def _metric_feval(metric: str):
    scorer: list = []  # challenge: (data set, its labels ranked once); one callback watches one fit

    def feval(preds: np.ndarray, data) -> tuple[str, float, bool]:
        y = data.get_label()
        if metric == "src":
            return "src", src(y, preds), True
        if metric == "challenge":
            if not scorer or scorer[0] is not data:
                scorer[:] = [data, ChallengeScore(y)]
            return "challenge", scorer[1](preds), True
        return "mse", mse(y, preds), False
    return feval


class PruningCallback:
    """LightGBM callback: report the validation metric every `interval` rounds, prune when told.

    Steps are `step_offset + round`, so the folds of a k-fold trial report at distinct
    steps that line up across trials (fold i starts at i * num_boost_round). Ours, not
    optuna-integration's LightGBMPruningCallback: that one reports at the booster's own round,
    so the k folds of one trial would report over each other at the same steps.
    """

    def __init__(self, trial: optuna.Trial, metric: str, step_offset: int = 0, interval: int = 10):
        if metric not in METRICS:
            raise ValueError(f"tuning.metric must be one of {sorted(METRICS)}, got {metric!r}")
        self.trial = trial
        self.metric = metric
        self.step_offset = step_offset
        self.interval = max(1, int(interval))
        self._feval = _metric_feval(metric)
        self.last_round = 0

    def __call__(self, env) -> None:
        round_ = env.iteration + 1
        if round_ % self.interval:
            return
        results = [r for r in env.model.eval_valid(feval=self._feval) if r[1] == self.metric]
        if not results:
            raise ValueError("the pruning callback needs a validation set (fit with X_val, y_val)")
        value = float(results[0][2])
        self.last_round = round_
        self.trial.report(value, step=self.step_offset + round_)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {round_}: validation {self.metric} {value:.4f}")


def make_pruner(startup_trials: int, warmup_rounds: int, enabled: bool = True,
                below_percentile: float = 25.0) -> optuna.pruners.BasePruner:
    """Prune a trial whose best value so far ranks below `below_percentile` of the finished trials'
    values at the same step (50: Optuna's MedianPruner). Finished trials are the survivors of
    pruning, so the bar rises as the study goes on; a low percentile stops only clearly bad trials.
    """
    if not enabled:
        return optuna.pruners.NopPruner()
    if not 0.0 < below_percentile < 100.0:
        raise ValueError(f"tuning.prune_percentile must be in (0, 100), got {below_percentile}")
    # Optuna's `percentile` is the share of trials kept
    return optuna.pruners.PercentilePruner(100.0 - below_percentile, n_startup_trials=startup_trials,
                                           n_warmup_steps=warmup_rounds)


# --- objective ------------------------------------------------------------------------------
def lightgbm_objective(X: pd.DataFrame, y: np.ndarray, folds: pd.DataFrame, space: dict[str, BaseDistribution],
                       base_params: dict[str, Any], metric: str = "src", target_stats: TargetStatSpec | None = None,
                       fit_mask: np.ndarray | None = None, num_boost_round: int = 2000,
                       early_stopping_rounds: int = 100, num_threads: int = 2, seed: int = 0,
                       report_interval: int = 10, pruning: bool = True,
                       adapt_to_size: bool = False, stop_metric: str = "l2") -> Callable[[optuna.Trial], float]:
    """The validation `metric` of LightGBM with the trial's parameters, cross-fit on `folds`; each fit stops
    early on `stop_metric` (models.gbdt.STOP_METRICS)."""
    if metric not in METRICS:
        raise ValueError(f"tuning.metric must be one of {sorted(METRICS)}, got {metric!r}")
    no_test = X.iloc[:0]
    if target_stats is not None:  # statistics for validation rows only: trials predict no test posts
        target_stats = dataclasses.replace(target_stats, keys_test=target_stats.keys_test.iloc[:0])

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params, **suggest(trial, space)}
        fits = 0

        def make(model_seed: int, rounds: int | None) -> LightGBMRegressor:
            nonlocal fits
            callbacks = []
            if rounds is None and pruning:  # a fit that validates: report its rounds
                callbacks.append(PruningCallback(trial, metric, fits * num_boost_round, report_interval))
                fits += 1
            return LightGBMRegressor(params, rounds or num_boost_round, early_stopping_rounds, num_threads,
                                     model_seed, callbacks=callbacks, adapt_to_size=adapt_to_size,
                                     stop_metric=stop_metric)

        started = time.perf_counter()
        result = cross_fit(make, X, y, folds, no_test, seeds=[seed], target_stats=target_stats,
                           fit_mask=fit_mask, progress=False, name=f"trial {trial.number}", predict_test=False)
        # the selection posts' score (models/validation.py): the report slice never scores a trial
        for key, value in result.selection_score.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("best_iterations", result.best_iterations)
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - started, 3))
        if metric == "challenge":  # needs the labels, not only the selection score's metrics
            chosen = selection_rows(folds)
            trial.set_user_attr("challenge", challenge_score(y[chosen], result.oof[chosen]))
            return float(trial.user_attrs["challenge"])
        return float(result.selection_score[metric])  # constant predictions score SRC 0 (models.metrics.src)

    return objective


# --- storage, study, workers ------------------------------------------------------------------
def open_storage(url: str, heartbeat_s: int = 60) -> optuna.storages.BaseStorage:
    """Optuna storage for an RDB URL, or `journal:<path>` for a journal file.

    RDB storages get a heartbeat: a trial whose worker died is marked failed after
    twice the interval (by the next worker that looks) and queued again with the same
    parameters, once; a second death of the same parameters frees the place for new ones.
    """
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {}
    if url.startswith("sqlite"):
        sqlite_file(url).parent.mkdir(parents=True, exist_ok=True)
        # wait for the other workers' writes instead of failing with "database is locked"
        engine_kwargs = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))


def sqlite_file(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def budget_lock_path(url: str) -> Path | None:
    """A lock file beside a file storage (SQLite, journal); None for a database server."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):] + ".budget.lock")
    if url.startswith("sqlite"):
        return Path(str(sqlite_file(url)) + ".budget.lock")
    return None


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql:", "postgresql+", "postgres:"))


@functools.lru_cache(maxsize=None)
def _lock_engine(url: str) -> sqlalchemy.engine.Engine:
    # one idle connection per worker process is kept for the lock; pre-ping survives a server restart
    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


class BudgetLock:
    """Serialises taking a place in a study's trial budget over every worker of the study.

    Not Optuna's MaxTrialsCallback: it counts the trials after one ends, so workers that start at
    the same moment each take a place and the study overshoots its budget by up to one trial per
    worker; the lock makes the budget exact.

    File storages (SQLite, journal): an flock on a file beside the storage. PostgreSQL:
    a session-level advisory lock, keyed by `key` (the study name), on a connection of its
    own; the server frees it when the worker's connection goes, so a killed worker never
    holds it. Other servers (MySQL): no lock. `release` may be called more than once.
    """

    def __init__(self, url: str | None, key: str):
        self.path = budget_lock_path(url) if url else None
        self.url = url if url and self.path is None and is_postgresql(url) else None
        digest = hashlib.sha256(f"smp-pipeline tuning:{key}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)  # advisory locks take a bigint
        self._held: Any = None

    @property
    def locks(self) -> bool:
        return self.path is not None or self.url is not None

    def acquire(self) -> None:
        if self._held is not None:
            raise RuntimeError("BudgetLock is not reentrant")
        if self.path is not None:
            self._held = FileLock(self.path)
            self._held.acquire()
        elif self.url is not None:
            connection = _lock_engine(self.url).connect()
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            connection.commit()
            self._held = connection

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self.path is not None:
            held.release()
            return
        try:
            held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            held.commit()
        finally:
            held.close()

    def __enter__(self) -> BudgetLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def redact(url: str) -> str:
    """A storage URL without its password, for logs and saved summaries."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def open_study(url: str, name: str, metric: str, seed: int, startup_trials: int = 10,
               pruner: optuna.pruners.BasePruner | None = None, heartbeat_s: int = 60) -> optuna.Study:
    """Create the study, or load it when another worker (or an earlier run) created it.

    Workers starting together would race to create the storage's tables: file storages
    and PostgreSQL do it under a lock; other database servers get a few retries.
    """
    lock = BudgetLock(url, "create tables and study")  # one key per database: the tables are shared
    for attempt in range(5):
        try:
            with lock:
                return optuna.create_study(storage=open_storage(url, heartbeat_s), study_name=name,
                                           direction=METRICS[metric], load_if_exists=True,
                                           sampler=TrialSeededTPESampler(seed, startup_trials), pruner=pruner)
        except Exception as err:  # noqa: BLE001 - schema creation raced with another worker
            if attempt == 4 or lock.locks:
                raise
            log.warning("opening study %s failed (%s); retrying", name, err)
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def this_machine() -> str:
    """The host name and pid namespace: a pid recorded under the same value can be checked here."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


DEAD_TRIAL_RETRIES = 2  # a trial whose process dies more often (e.g. out of memory) frees its place


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker process, on this machine, is gone, and queue each again (ahead of
    new draws) with its parameters: a killed run resumes at once, in the order of the uninterrupted run,
    instead of waiting for the heartbeat's grace period. Returns the failed trials' numbers."""
    here, failed = this_machine(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=DEAD_TRIAL_RETRIES)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("machine") != here or pid is None or pid == os.getpid() or process_alive(pid):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:  # it finished or was failed meanwhile
            continue
        retry(study, study._storage.get_trial(trial._trial_id))
        failed.append(trial.number)
        log.info("tuning: trial %d was left running by worker %s (pid %d on this machine, which is gone); failed it "
                 "and queued its parameters to run next", trial.number, trial.user_attrs.get("worker"), pid)
    return failed


def waiting_line(study: optuna.Study, worker: str) -> str:
    """What a worker waits for when every place of the budget is taken by running trials."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    storage = study._storage
    grace = 2 * storage.get_heartbeat_interval() if is_heartbeat_enabled(storage) else None  # open_storage's
    who = ", ".join(f"{t.number} (worker {t.user_attrs.get('worker', '?')}"
                    + (f", pid {t.user_attrs['pid']}" if "pid" in t.user_attrs else "") + ")" for t in running)
    return (f"tuning worker {worker}: every place of the budget is taken; waiting for running trial(s) {who} to "
            "finish" + (f", or to be failed and rerun when their worker's heartbeat is {grace} s old "
                        "(2 x tuning.heartbeat_s)" if grace else ""))


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker's heartbeat stopped (RDB storages), and queue them again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def count_trials(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
               timeout_s: float = 0.0, storage_url: str | None = None, worker: str = "0",
               first_params: dict[str, Any] | None = None, progress: bool = True, poll_s: float = 1.0,
               warm_params: dict[str, Any] | None = None) -> int:
    """Run trials until the study holds `n_trials` finished ones; returns how many ran here.

    A place in the budget is taken under the study's `BudgetLock` (for `storage_url`),
    which is held until `study.optimize` (Optuna's heartbeat and bookkeeping) has made the
    trial RUNNING: no two workers can take the last place. With a lock (file storages,
    PostgreSQL) the workers run exactly `n_trials` between them; without one (MySQL) two
    workers checking at the same instant can run one trial too many each.
    When every place is taken by running trials, the worker waits instead of leaving: a
    running trial whose worker died is failed after the heartbeat's grace period and
    queued again (or, after a second death, its place freed), and this worker runs it.
    `timeout_s` > 0 stops taking new trials after that many seconds in this process.
    first_params: the parameters of the study's first trial (e.g. `base_trial_params`).
    warm_params: a warm start (e.g. another member's best parameters), evaluated before first_params.
    """
    points = start_points(first_params, warm_params)
    lock = BudgetLock(storage_url, study.study_name)
    taken_over = False  # the trial that just ran was failed by another worker while it ran

    def run_trial(trial: optuna.Trial) -> float:
        nonlocal taken_over
        lock.release()  # the trial is RUNNING: the next worker may take a place
        try:
            trial.set_user_attr("worker", worker)
            return objective(trial)
        finally:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            taken_over = trial.number not in {t.number for t in running}

    states: list[TrialState] = []

    def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        states.append(trial.state)
        if progress:
            log.info("%s", trial_line(study, trial, n_trials, worker))

    started = time.monotonic()
    ran = failed_in_a_row = 0
    last_wait = ""
    while True:
        if timeout_s > 0 and time.monotonic() - started >= timeout_s:
            log.info("tuning worker %s: time budget of %.0f s used; stopping", worker, timeout_s)
            break
        lock.acquire()
        taken_over = False
        try:
            action = _take_place(study, n_trials, points)
            if action == "run":
                study.optimize(run_trial, n_trials=1, gc_after_trial=False, show_progress_bar=False, catch=(),
                               callbacks=[finished])
        except Exception as err:  # noqa: BLE001 - Optuna fails in several ways to tell a trial already failed
            if not taken_over:
                raise
            # its heartbeat came later than the grace period (a stalled machine): the result is lost
            log.warning("tuning worker %s: another worker took this worker's trial for dead and queued it again "
                        "(%s: %s); on a machine this busy, raise tuning.heartbeat_s", worker, type(err).__name__, err)
            continue
        finally:
            lock.release()
        if action == "done":
            break
        if action == "wait":
            line = waiting_line(study, worker)
            if line != last_wait:  # once, not once per poll
                log.info("%s", line)
                last_wait = line
            time.sleep(poll_s)
            continue
        last_wait = ""
        ran += 1
        # a failed trial (e.g. a NaN objective) frees its place in the budget: without this stop, an
        # objective that always fails would be retried for ever
        failed_in_a_row = failed_in_a_row + 1 if states and states[-1] == TrialState.FAIL else 0
        if failed_in_a_row >= max(n_trials, 3):
            raise RuntimeError(f"tuning worker {worker}: the last {failed_in_a_row} trials failed (the objective "
                               "returned NaN or infinity; see the warnings above); stopping")
    return ran


def start_points(first_params: dict[str, Any] | None,
                 warm_params: dict[str, Any] | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The fixed parameters a study evaluates before sampling, in order, with their trials' user attributes:
    the warm start, then the hand-set parameters (once, when they are not the warm start)."""
    points = []
    if warm_params is not None:
        points.append((warm_params, {"base": False, "warm_start": True, "start_point": len(points)}))
    if first_params is not None and first_params != warm_params:
        points.append((first_params, {"base": True, "start_point": len(points)}))
    return points


def _take_place(study: optuna.Study, n_trials: int, points: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Under the budget lock: "done" (budget finished), "wait" (every place running) or "run",
    with a WAITING trial in the queue for `study.optimize` to pop."""
    fail_dead_local_trials(study)
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    finished = sum(s in FINISHED_STATES for s in states)
    if finished >= n_trials:
        return "done"
    if finished + states.count(TrialState.RUNNING) >= n_trials:
        return "wait"
    if TrialState.WAITING not in states:  # else the queue holds a retried (or unstarted) trial: run that
        # each start point once, in order (a failed one is not rerun), then the sampler's draws
        taken = {t.user_attrs.get("start_point") for t in trials}
        params, attrs = next(((p, a) for p, a in points if a["start_point"] not in taken), ({}, {"base": False}))
        study.enqueue_trial(params, user_attrs=attrs)
    # stamp the trial this worker pops with its process before it is RUNNING, so that a kill at any moment
    # after leaves a trial that a rerun on this machine fails at once (fail_dead_local_trials)
    queued = min((t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))), key=lambda t: t.number)
    for key, value in (("machine", this_machine()), ("pid", os.getpid())):
        study._storage.set_trial_user_attr(queued._trial_id, key, value)
    return "run"


def split_trial_budget(n_trials: int, members: Sequence[str], first_share: float = 0.5) -> dict[str, int]:
    """The trial budget of one study per member, summing to exactly `n_trials`: the first member gets
    `first_share` of it (rounded up), the others share the rest evenly (the earlier ones any remainder),
    and every member gets at least one trial (a later member's first trial is its warm start)."""
    members = list(members)
    if not members or len(set(members)) != len(members):
        raise ValueError(f"tuning: the members to tune must be distinct and at least one, got {members}")
    if not 0.0 < first_share <= 1.0:
        raise ValueError(f"tuning.per_member_first_share must be in (0, 1], got {first_share}")
    if n_trials < len(members):
        raise ValueError(f"tuning.n_trials: {n_trials} trials cannot give each of the {len(members)} tuned members "
                         f"({', '.join(members)}) one trial; raise tuning.n_trials or set tuning.per_member=false")
    later = len(members) - 1
    first = min(n_trials - later, max(1, math.ceil(n_trials * first_share)))
    if not later:
        return {members[0]: n_trials}
    rest = n_trials - first
    return {members[0]: first, **{m: rest // later + (i < rest % later) for i, m in enumerate(members[1:])}}


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, n_trials: int, worker: str = "0") -> str:
    """The one log line of a finished trial: its state and scores, the budget used, the best so far."""
    scores = " ".join(f"{m.upper()} {trial.user_attrs[m]:.4f}" for m in ("src", "mae", "mse") if m in trial.user_attrs)
    state = trial.state.name.lower()
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        state += f" at round {step} ({trial.intermediate_values[step]:.4f})"
    elif trial.state == TrialState.FAIL:
        state += " (its objective is not a number)" if trial.user_attrs else " (see the error above)"
    best = best_trial(budget_trials(study, n_trials), study.direction)
    best = None if best is None else best.value
    return (f"tuning trial {trial.number} {state}" + (f": validation {scores}" if scores else "")
            + f"; {count_trials(study, FINISHED_STATES)}/{n_trials} finished, best "
            + ("-" if best is None else f"{best:.4f}") + (f" (worker {worker})" if worker != "0" else ""))


def budget_trials(study: optuna.Study, n_trials: int | None = None) -> list[FrozenTrial]:
    """The trials of a budget of `n_trials`: in number order, up to the n_trials-th finished one (every trial
    when None). A config with a larger budget on the same study adds trials after these, and a failed trial
    frees its place: so a config's result never depends on the trials another config added."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    if n_trials is None:
        return trials
    finished = 0
    for i, trial in enumerate(trials):
        finished += trial.state in FINISHED_STATES
        if finished >= n_trials:
            return trials[:i + 1]
    return trials


def best_trial(trials: Sequence[FrozenTrial], direction: optuna.study.StudyDirection) -> FrozenTrial | None:
    """The complete trial with the best value (the lowest number among equals); None when none completed."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))


# --- summary -------------------------------------------------------------------------------------
def trials_frame(study: optuna.Study, n_trials: int | None = None) -> pd.DataFrame:
    """One row per trial of the budget (`budget_trials`): number, state, value, last reported step and value,
    seconds, parameters."""
    rows = []
    for t in budget_trials(study, n_trials):
        seconds = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        last_step = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({
            "number": t.number, "state": t.state.name,
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "last_step": last_step,
            "last_value": None if last_step is None else t.intermediate_values[last_step],
            "seconds": seconds, "worker": t.user_attrs.get("worker"),
            **{f"params_{k}": v for k, v in t.params.items()},
        })
    return pd.DataFrame(rows)


def study_summary(study: optuna.Study, metric: str, n_trials: int | None = None) -> dict[str, Any]:
    """Best trial and per-state counts, plus every trial (for the history plot), of a budget of `n_trials`
    (`budget_trials`; the whole study when None)."""
    own = budget_trials(study, n_trials)
    trials = trials_frame(study, n_trials)
    counts = {s.name: sum(t.state == s for t in own) for s in TrialState}
    summary: dict[str, Any] = {
        "study_name": study.study_name, "metric": metric, "direction": METRICS[metric],
        "counts": {k: v for k, v in counts.items() if v},
        "trials": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                   for row in trials.to_dict("records")],
    }
    best = best_trial(own, study.direction)
    if best is not None:
        summary.update({"best_value": best.value, "best_params": best.params, "best_trial": best.number,
                        "best_scores": {k: best.user_attrs.get(k) for k in ("src", "mae", "mse")},
                        "best_iterations": best.user_attrs.get("best_iterations")})
    return summary
