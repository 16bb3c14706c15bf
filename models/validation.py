"""Fold schemes: the one source of truth for which post validates which model.

`make_folds` returns, per train post in file order:
- `fold`: the validation fold the post belongs to (0..K-1), or -1 for a post that
  only ever trains (the early part of a time-ordered holdout);
- `feature_fold`: 0..K-1, the fold that makes a train post's out-of-fold features (its
  target statistics, user features and prototype-network embedding come from models fit
  on the other feature folds), so that no post's own label reaches its own features;
- `report`: the post belongs to the report slice (below).

The protocol (one for every consumer: models/cv.py, models/tuning.py, pipeline/blend.py,
pipeline/submit.py read it from here). Validated posts (fold >= 0) are of two kinds:
- selection posts (`selection_rows`): every choice is made on them: the early-stopping
  round of each LightGBM/CatBoost fit, the Optuna trials' scores, the blend weights;
- report posts (`report_rows`, `validation.report_frac` of train): kept apart. They never
  fit a cross-fit model, never stop one early, never score a trial, never weigh a blend
  member; the models of their fold predict them, and the score the run reports (last line,
  scores.json, report, leaderboard) is computed on them only. On a time holdout they are the
  latest posts of the holdout (its later half at the defaults: the slice that follows the
  selection part in time, as test follows train); under k-fold they are dealt to the folds
  like the other posts (the latest posts when the configured scheme was a time holdout,
  random posts under kfold, whole users under group_kfold). Only the refits that predict
  test (which nobody validates) train on them.
A run's protocol is named by `protocol_name` and its folds by `folds_digest`: the leaderboard
ranks a run only among runs of the same protocol and folds.

Two things adapt the folds to the data (`fold_plan` decides, `make_folds` applies):
- size: a time holdout of fewer than `min_holdout_posts` posts is too small to drive
  early stopping, tuning and blend weights (on 200 posts it holds 40), so small data
  sets get `n_folds`-fold cross-fitting instead, which validates on every train post;
- unseen users: given the test posts' users, the validation part holds the same
  share of posts by users with no post in the fit part as the test holds of users
  not in train (`mirror_unseen`). A model then stops early, is tuned and blended on
  the mix of posts it will predict, and the target-statistic folds train it on rows
  whose user statistic is missing as often as it will be on test.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

SCHEMES = ("kfold", "group_kfold", "time_holdout")
# a report slice smaller than this scores nothing worth reading: none is kept (the run reports the
# selection score and its protocol says so); at most half of the validated posts go to it
MIN_REPORT_POSTS = 5


@dataclass(frozen=True)
class FoldPlan:
    """What `make_folds` does with a data set: the scheme it applies and why."""
    scheme: str            # the scheme applied (the configured one, or kfold for a small data set)
    configured: str        # validation.scheme
    n_holdout: int         # posts of the time holdout (0 for a k-fold scheme)
    unseen_target: float | None  # share of validation posts by users unseen in the fit part (None: not mirrored)
    reason: str = ""
    n_report: int = 0      # posts of the report slice (0: none, the selection posts give the reported score)

    @property
    def protocol(self) -> str:
        return protocol_name(self.scheme, self.n_report)

    def to_dict(self) -> dict:
        return asdict(self)


def test_unseen_share(train_uids: np.ndarray, test_uids: np.ndarray) -> float:
    """Share of test posts whose user has no post in train."""
    test_uids = np.asarray(test_uids)
    return float((~np.isin(test_uids, np.asarray(train_uids))).mean()) if len(test_uids) else 0.0


def protocol_name(scheme: str, n_report: int) -> str:
    """The name of a validation protocol: the scheme applied, and whether a report slice gives its score."""
    return f"{scheme}/report-slice" if n_report else f"{scheme}/selection-score"


def report_size(n: int, n_validated: int, n_folds: int, report_frac: float, kfold: bool) -> int:
    """Posts of the report slice: `report_frac` of the `n` train posts, at most half of the `n_validated`
    candidates, leaving every k-fold fold two selection posts; 0 below MIN_REPORT_POSTS."""
    if not 0.0 <= report_frac < 1.0:
        raise ValueError(f"validation.report_frac must be in [0, 1), got {report_frac}")
    if report_frac == 0.0:
        return 0
    cap = n_validated // 2 if not kfold else min(n_validated // 2, n_validated - 2 * n_folds)
    size = min(max(MIN_REPORT_POSTS, int(round(report_frac * n))), cap)
    return size if size >= MIN_REPORT_POSTS else 0


def fold_plan(n: int, scheme: str, n_folds: int, holdout_frac: float = 0.2, min_holdout_posts: int = 0,
              unseen_share: float | None = None, report_frac: float = 0.0) -> FoldPlan:
    """The scheme `make_folds` applies to `n` train posts (see the module docstring)."""
    plan = _scheme_plan(n, scheme, n_folds, holdout_frac, min_holdout_posts, unseen_share)
    kfold = plan.scheme != "time_holdout"
    n_report = report_size(n, n if kfold else plan.n_holdout, n_folds, report_frac, kfold)
    reason = plan.reason
    if report_frac > 0 and not n_report:
        reason = (reason + "; " if reason else "") + (
            f"too few validated posts for a report slice of at least {MIN_REPORT_POSTS}: the reported score is "
            "the selection score (optimistic)")
    return FoldPlan(plan.scheme, plan.configured, plan.n_holdout, plan.unseen_target, reason, n_report)


def _scheme_plan(n: int, scheme: str, n_folds: int, holdout_frac: float, min_holdout_posts: int,
                 unseen_share: float | None) -> FoldPlan:
    if scheme not in SCHEMES:
        raise ValueError(f"validation.scheme must be one of {SCHEMES}, got {scheme!r}")
    if n_folds < 2:
        raise ValueError(f"validation.n_folds must be at least 2, got {n_folds}")
    if n < n_folds:
        raise ValueError(f"{n} train posts cannot be split into {n_folds} folds")
    target = None if unseen_share is None else float(unseen_share)
    if scheme != "time_holdout":
        return FoldPlan(scheme, scheme, 0, target if scheme == "kfold" else None)
    if not 0.0 < holdout_frac < 1.0:
        raise ValueError(f"validation.holdout_frac must be in (0, 1), got {holdout_frac}")
    n_holdout = max(1, int(round(n * holdout_frac)))
    if n_holdout < min_holdout_posts:
        return FoldPlan("kfold", scheme, 0, target,
                        f"a time holdout of {n_holdout} posts is below validation.min_holdout_posts "
                        f"({min_holdout_posts}): {n_folds}-fold cross-fitting validates on all {n} posts")
    return FoldPlan("time_holdout", scheme, n_holdout, target)


def make_folds(posts: pd.DataFrame, scheme: str, n_folds: int, seed: int, holdout_frac: float = 0.2,
               min_holdout_posts: int = 0, test_uids: np.ndarray | None = None,
               report_frac: float = 0.0) -> pd.DataFrame:
    """Assign folds to the train posts (needs columns Pid, Uid, Postdate).

    test_uids: the test posts' users; given, the validation part mirrors the test's share of
    unseen users (kfold and time_holdout; group_kfold holds out whole users anyway).
    report_frac: share of train posts kept apart as the report slice (module docstring).
    """
    n = len(posts)
    share = None if test_uids is None else test_unseen_share(posts["Uid"].to_numpy(), test_uids)
    plan = fold_plan(n, scheme, n_folds, holdout_frac, min_holdout_posts, share, report_frac)
    rng = np.random.default_rng(seed)
    uids = posts["Uid"].to_numpy()
    report = np.zeros(n, dtype=bool)
    if plan.n_report and plan.scheme != "time_holdout":
        return _kfold_with_report(posts, plan, n_folds, rng)
    if plan.unseen_target is None:
        random_folds = rng.permutation(np.arange(n) % n_folds)
    else:
        random_folds = mirrored_folds(uids, n_folds, plan.unseen_target, rng)
    if plan.scheme == "kfold":
        fold = feature_fold = random_folds
    elif plan.scheme == "group_kfold":
        fold = feature_fold = _group_folds(uids, n_folds, rng)
    else:
        feature_fold = random_folds
        fold = np.full(n, -1, dtype=np.int64)
        holdout = _holdout_rows(posts, plan.n_holdout, plan.unseen_target)
        fold[holdout] = 0
        # the report slice: the holdout's latest posts (ties in time keep file order)
        if plan.n_report:
            later = holdout[np.argsort(posts["Postdate"].to_numpy()[holdout], kind="stable")]
            report[later[len(later) - plan.n_report:]] = True
    return _folds_frame(posts, fold, feature_fold, report)


def _folds_frame(posts: pd.DataFrame, fold, feature_fold, report) -> pd.DataFrame:
    return pd.DataFrame({"Pid": posts["Pid"].to_numpy(), "fold": np.asarray(fold, dtype=np.int64),
                         "feature_fold": np.asarray(feature_fold, dtype=np.int64),
                         "report": np.asarray(report, dtype=bool)})


def _kfold_with_report(posts: pd.DataFrame, plan: FoldPlan, n_folds: int, rng: np.random.Generator) -> pd.DataFrame:
    """k folds with a report slice: the slice is chosen first (latest posts when a time holdout was
    configured, whole users under group_kfold, random posts under kfold), then the selection posts
    and the report posts are dealt to the folds each on their own, so every fold keeps both."""
    n = len(posts)
    uids = posts["Uid"].to_numpy()
    report = np.zeros(n, dtype=bool)
    if plan.configured == "time_holdout":
        report[np.argsort(posts["Postdate"].to_numpy(), kind="stable")[n - plan.n_report:]] = True
    elif plan.scheme == "group_kfold":
        codes = pd.factorize(uids)[0]
        sizes = np.bincount(codes)
        taken = 0
        for user in rng.permutation(len(sizes)):
            if taken + sizes[user] <= plan.n_report:
                report[codes == user] = True
                taken += sizes[user]
    else:
        report[rng.choice(n, plan.n_report, replace=False)] = True
    fold = np.empty(n, dtype=np.int64)
    for part in (~report, report):
        rows = np.flatnonzero(part)
        if plan.scheme == "group_kfold":
            fold[rows] = _group_folds(uids[rows], n_folds, rng)
        elif plan.unseen_target is not None:
            fold[rows] = mirrored_folds(uids[rows], n_folds, plan.unseen_target, rng)
        else:
            fold[rows] = rng.permutation(np.arange(len(rows)) % n_folds)
    return _folds_frame(posts, fold, fold, report)


def _holdout_rows(posts: pd.DataFrame, n_holdout: int, unseen_target: float | None) -> np.ndarray:
    """Rows of the time holdout: the latest posts; mirrored, a share of them by whole new users.

    Mirrored: the users who arrived last (latest first post) give all their posts until those
    make `unseen_target` of the holdout; the rest are the latest posts of the other users, each
    user's first post staying in the fit part so that these users are seen.
    """
    n = len(posts)
    time = posts["Postdate"].to_numpy()
    order = np.argsort(time, kind="stable")  # ties in time keep file order: reproducible
    if unseen_target is None:
        return order[n - n_holdout:]
    codes, uniques = pd.factorize(posts["Uid"].to_numpy())
    sizes = np.bincount(codes)
    first_time = np.full(len(uniques), np.inf)
    np.minimum.at(first_time, codes, time.astype(np.float64))
    want_unseen = int(round(unseen_target * n_holdout))
    chosen = np.zeros(len(uniques), dtype=bool)
    taken = 0
    for user in np.argsort(-first_time, kind="stable"):  # newest arrivals first
        if taken >= want_unseen:
            break
        if taken + sizes[user] <= want_unseen:
            chosen[user] = True
            taken += sizes[user]
    first_post = np.zeros(n, dtype=bool)
    first_post[order[np.unique(codes[order], return_index=True)[1]]] = True
    in_holdout = chosen[codes].copy()
    later_seen = order[~chosen[codes[order]] & ~first_post[order]]  # time order
    in_holdout[later_seen[max(0, len(later_seen) - (n_holdout - int(in_holdout.sum()))):]] = True
    # too few such posts (every user posted once, say): the latest remaining posts fill the holdout
    rest = order[~in_holdout[order]]
    in_holdout[rest[max(0, len(rest) - (n_holdout - int(in_holdout.sum()))):]] = True
    return np.flatnonzero(in_holdout)


def mirrored_folds(uids: np.ndarray, n_folds: int, unseen_share: float, rng: np.random.Generator) -> np.ndarray:
    """Random folds in which about `unseen_share` of each fold's posts are by users with no post outside it.

    Posts are dealt at random, as in plain k-fold; then whole users (random order, users of several
    posts: a user of one post is unseen wherever it goes) are moved into one fold each until the
    posts of unseen users reach the share. Fold sizes stay within a user's size of each other.
    """
    n = len(uids)
    codes = pd.factorize(np.asarray(uids))[0]
    sizes = np.bincount(codes)
    fold = rng.permutation(np.arange(n) % n_folds)
    order = rng.permutation(len(sizes))

    def unseen_count(f: np.ndarray) -> int:
        folds_of_user = np.zeros((len(sizes), n_folds), dtype=np.int64)
        np.add.at(folds_of_user, (codes, f), 1)
        return int(sizes[(folds_of_user > 0).sum(1) == 1].sum())

    want = int(round(unseen_share * n))
    have = unseen_count(fold)
    whole = np.zeros(len(sizes), dtype=bool)
    for user in order:
        if have >= want:
            break
        if sizes[user] > 1 and sizes[user] <= n // n_folds:
            whole[user] = True
            have += sizes[user]  # an upper bound: some of its posts may have been alone already
    if not whole.any():
        return fold
    # the chosen users' posts, whole, to the folds that keep the sizes even; the others keep their random fold
    moved = whole[codes]
    load = np.bincount(fold[~moved], minlength=n_folds)
    user_fold = np.empty(len(sizes), dtype=np.int64)
    for user in np.flatnonzero(whole)[np.argsort(-sizes[whole], kind="stable")]:
        user_fold[user] = int(np.argmin(load))
        load[user_fold[user]] += sizes[user]
    fold = fold.copy()
    fold[moved] = user_fold[codes[moved]]
    return fold


def _group_folds(groups: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy balanced assignment of whole groups (largest first) to the lightest fold."""
    codes, sizes = np.unique(groups, return_inverse=True, return_counts=True)[1:]
    n_groups = len(sizes)
    # random tie-break among equal sizes, then largest first
    order = np.lexsort((rng.permutation(n_groups), -sizes))
    load = np.zeros(n_folds, dtype=np.int64)
    group_fold = np.empty(n_groups, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        group_fold[g] = f
        load[f] += sizes[g]
    return group_fold[codes]


def validation_folds(folds: pd.DataFrame) -> list[int]:
    """The folds that validate a model (all but -1)."""
    return sorted(int(f) for f in np.unique(folds["fold"]) if f >= 0)


def report_rows(folds: pd.DataFrame) -> np.ndarray:
    """Per post: in the report slice (kept apart from every choice; the reported score's posts).
    A folds table without the column (written before the protocol) has no report slice."""
    if "report" not in folds:
        return np.zeros(len(folds), dtype=bool)
    return folds["report"].to_numpy(dtype=bool) & (folds["fold"].to_numpy() >= 0)


def selection_rows(folds: pd.DataFrame) -> np.ndarray:
    """Per post: validated and not in the report slice: early stopping, trials and blend weights use these."""
    return (folds["fold"].to_numpy() >= 0) & ~report_rows(folds)


def scored_rows(folds: pd.DataFrame) -> np.ndarray:
    """The posts whose score a run reports: the report slice, or the selection posts when there is none."""
    report = report_rows(folds)
    return report if report.any() else selection_rows(folds)


def run_protocol(folds: pd.DataFrame, scheme: str) -> str:
    """The protocol name of a folds table under the applied `scheme`."""
    return protocol_name(scheme, int(report_rows(folds).sum()))


def folds_digest(folds: pd.DataFrame) -> str:
    """12 hex digits naming the fold assignment (posts, folds, report slice): runs compare only on equal folds."""
    digest = hashlib.sha256()
    digest.update(folds["Pid"].astype(str).str.cat(sep=",").encode())
    for column in (folds["fold"].to_numpy(dtype=np.int64), report_rows(folds)):
        digest.update(b"|" + np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()[:12]


def seen_in_fit(uids: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Per train post: does its user have a post among the rows that fit the model validating it?

    A validated post (fold v >= 0) is `seen` when its user has a post outside fold v; posts that
    never validate (fold -1) are False.
    """
    codes = pd.factorize(np.asarray(uids))[0]
    fold = np.asarray(fold)
    total = np.bincount(codes)
    slot = np.where(fold >= 0, fold, 0)
    per_fold = np.zeros((len(total), int(slot.max()) + 1), dtype=np.int64)
    np.add.at(per_fold, (codes, slot), (fold >= 0).astype(np.int64))
    outside = total[codes] - np.where(fold >= 0, per_fold[codes, slot], 0)
    return (fold >= 0) & (outside > 0)
