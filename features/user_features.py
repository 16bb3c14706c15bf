"""User features beyond the `meta_*` columns: cold-start profiles, posting rhythm, user trends.

Label-free (block `user`, computed over train and test posts together, like `features.metadata`):
- profile: the user's description and location texts embedded by the text encoder and
  reduced by PCA over the users (a few components each; NaN for an empty text);
- mix: the share of videos and the share of each (frequent) category among the user's posts;
- timing: days since the user's previous post and until the next one, posts in the last day and week;
- `_user_cluster`: a k-means cluster of the users' profiles (carried, not a model column) that the
  similar-user statistic groups by.

Label-based (inside every fit, out of fold, like `features.target_stats`; a post never sees its own
label nor a label of a fold it does not fit on):
- `user_trend_statistics`: the recency-weighted mean label of the user's EARLIER posts;
- `similar_user_statistics`: the mean label of the posts of the other users in the post's profile
  cluster (leave-user-out), for users never seen in the fit rows.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from common.pca import PCA
from features.target_stats import (WINDOWS, earlier_sums, fold_priors, fold_sums, out_of_fold_smoothing,
                                   shrunk_mean)

DAY = 86400.0
TEXT_FIELDS = {"desc": "user_description", "loc": "location_description"}
CLUSTER = "_user_cluster"


# --- label-free block -------------------------------------------------------------------------------
def _user_codes(both: pd.DataFrame) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(both["Uid"].astype(str).to_numpy())
    return codes.astype(np.int64), len(uniques)


def _first_per_user(values: pd.Series, codes: np.ndarray, n_users: int) -> np.ndarray:
    """The user's value on their first row (profile fields repeat on every post of a user)."""
    first = np.unique(codes, return_index=True)[1]  # codes are 0..n_users-1
    return values.to_numpy()[first]


def profile_text_features(texts: np.ndarray, encode: Callable[[list[str]], np.ndarray], dims: int,
                          prefix: str) -> tuple[np.ndarray, list[str]]:
    """(users, k) PCA components of each user's text embedding (NaN for an empty text), k <= dims.

    No columns when fewer than 3 distinct non-empty texts exist (nothing to reduce)."""
    texts = np.asarray([("" if t is None else str(t)).strip() for t in texts], dtype=object)
    present = texts != ""
    distinct = list(dict.fromkeys(texts[present].tolist()))
    k = min(dims, len(distinct) - 1)
    if dims <= 0 or k < 1 or len(distinct) < 3:
        return np.zeros((len(texts), 0), np.float32), []
    vectors = np.asarray(encode(distinct), dtype=np.float64)
    pca = PCA(k).fit(vectors)
    reduced = pca.transform(vectors)
    where = {t: i for i, t in enumerate(distinct)}
    out = np.full((len(texts), reduced.shape[1]), np.nan, np.float32)
    rows = np.flatnonzero(present)
    out[rows] = reduced[[where[t] for t in texts[rows]]]
    return out, [f"user_{prefix}_{j}" for j in range(reduced.shape[1])]


def _window_counts(codes: np.ndarray, t: np.ndarray, order: np.ndarray, window: float) -> np.ndarray:
    """Per post: the user's other posts in (t - window, t] (same second counts, the post itself not)."""
    span = float(t.max() - t.min()) + 2 * window + 1.0
    key = codes * span + (t - t.min())  # (user, time) as one sortable number
    sorted_key = key[order]
    hi = np.searchsorted(sorted_key, key, side="right")
    lo = np.searchsorted(sorted_key, key - window, side="right")
    return (hi - lo - 1).astype(np.float64)


def timing_features(codes: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    order = np.lexsort((np.arange(len(t)), t, codes))  # by user, then time, then file order
    cs, ts = codes[order], t[order]
    same_prev = np.r_[False, cs[1:] == cs[:-1]]
    same_next = np.r_[cs[1:] == cs[:-1], False]
    prev_gap, next_gap = np.full(len(t), np.nan), np.full(len(t), np.nan)
    prev_gap[order[same_prev]] = (ts[1:] - ts[:-1])[same_prev[1:]] / DAY
    next_gap[order[same_next]] = (ts[1:] - ts[:-1])[same_next[:-1]] / DAY
    return {"user_days_since_prev": prev_gap, "user_days_to_next": next_gap,
            "user_posts_last_day": _window_counts(codes, t, order, DAY),
            "user_posts_last_week": _window_counts(codes, t, order, 7 * DAY)}


def mix_features(both: pd.DataFrame, codes: np.ndarray, n_users: int, max_categories: int
                 ) -> tuple[np.ndarray, list[str]]:
    """(users, 1 + c): share of videos, then the share of each of the c most frequent categories."""
    n_posts = np.bincount(codes, minlength=n_users).astype(np.float64)
    video = (both["Mediatype"].astype(str).str.lower() == "video").to_numpy(np.float64)
    columns = [np.bincount(codes, weights=video, minlength=n_users) / n_posts]
    names = ["user_video_share"]
    category = both["Category"].fillna("").astype(str)
    counts = category.value_counts()
    frequent = sorted(counts.index, key=lambda c: (-counts[c], c))[:max_categories]
    if len(frequent) > 1:  # one category: every share is 1, nothing to say
        for j, name in enumerate(sorted(frequent)):
            hit = (category == name).to_numpy(np.float64)
            columns.append(np.bincount(codes, weights=hit, minlength=n_users) / n_posts)
            names.append(f"user_category_share_{j}")
    return np.column_stack(columns), names


def profile_clusters(profile: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster of each user's standardised profile (NaN as 0, the mean); 0 for all when too few users."""
    n_users = len(profile)
    k = n_clusters or int(np.clip(round(np.sqrt(n_users / 4)), 2, 64))
    k = min(k, n_users // 2)
    if k < 2 or profile.shape[1] == 0:
        return np.zeros(n_users, np.int64)
    x = np.asarray(profile, np.float64)
    mean = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0) if len(x) else 0.0
    x = np.where(np.isfinite(x), x, np.nan_to_num(mean))
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    from sklearn.cluster import KMeans  # imported here: only this step needs it
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    return labels.astype(np.int64)


def build_user_block(train: pd.DataFrame, test: pd.DataFrame, encode: Callable[[list[str]], np.ndarray] | None,
                     text_dims: int = 4, mix: bool = True, timing: bool = True, clusters: bool = True,
                     n_clusters: int = 0, max_categories: int = 16, seed: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Block `user` for both splits (rows in the posts' order, keyed by Pid) and a summary.

    encode: strings -> (n, d) embeddings (the text encoder), or None for no text features.
    """
    both = pd.concat([train, test], ignore_index=True)
    codes, n_users = _user_codes(both)
    t = both["Postdate"].to_numpy(np.float64)
    feats = {"Pid": both["Pid"].to_numpy()}
    per_user, names = [], []
    summary = {"users": n_users}
    if encode is not None and text_dims > 0:
        for prefix, field in TEXT_FIELDS.items():
            if field not in both:
                continue
            values, cols = profile_text_features(_first_per_user(both[field].fillna(""), codes, n_users), encode,
                                                 text_dims, prefix)
            per_user.append(values)
            names += cols
            summary[f"{prefix}_components"] = len(cols)
    if mix:
        values, cols = mix_features(both, codes, n_users, max_categories)
        per_user.append(values)
        names += cols
    profile = np.column_stack(per_user) if per_user else np.zeros((n_users, 0))
    for j, name in enumerate(names):
        feats[name] = profile[codes, j]
    if timing:
        feats.update(timing_features(codes, t))
    if clusters:
        # the cluster groups users by what is known of every user, seen or not: profile and posting habits
        habits = np.column_stack([np.log1p(np.bincount(codes, minlength=n_users)),
                                  np.log1p(np.clip(_first_per_user(both["photo_count"], codes, n_users)
                                                   .astype(np.float64), 0, None))])
        cluster = profile_clusters(np.column_stack([profile, habits]), n_clusters, seed)
        feats[CLUSTER] = cluster[codes]
        summary["clusters"] = int(cluster.max()) + 1
    frame = pd.DataFrame(feats)
    summary["columns"] = [c for c in frame.columns if c != "Pid"]
    n_train = len(train)
    return frame.iloc[:n_train].reset_index(drop=True), frame.iloc[n_train:].reset_index(drop=True), summary


# --- label-based, out of fold ---------------------------------------------------------------------------
def _compact_folds(inner_fold) -> np.ndarray:
    return pd.factorize(np.asarray(inner_fold))[0].astype(np.int64)


def user_trend_statistics(keys_fit: pd.DataFrame, y_fit: np.ndarray, inner_fold: np.ndarray,
                          keys_apply: pd.DataFrame, half_life_days: float = 30.0, max_lags: int = 64,
                          smoothing: float = 1.0, window: str = "folds") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recency-weighted mean label of the user's earlier fit posts (weights halve every `half_life_days`).

    A fit row sees the up to `max_lags` latest strictly earlier posts of its user in the fit rows of
    the OTHER inner folds (window `folds`) or in all fit rows (`expanding`, a time holdout: as an
    apply row does); an apply row (validation, test) those among all fit rows. Smoothed towards the
    (out-of-fold) prior by `smoothing` units of weight; `te_user_trend_w` is the weight behind it.
    keys_*: columns Uid and Postdate.
    """
    _check_window(window)
    y = np.asarray(y_fit, np.float64)
    inner = _compact_folds(inner_fold)
    uid_fit, uid_apply = keys_fit["Uid"].astype(str).to_numpy(), keys_apply["Uid"].astype(str).to_numpy()
    codes, uniques = pd.factorize(uid_fit)
    codes_apply = pd.Index(uniques).get_indexer(uid_apply)
    t_fit = keys_fit["Postdate"].to_numpy(np.float64)
    t_apply = keys_apply["Postdate"].to_numpy(np.float64)
    # (user, time rank) as one integer key, exact whatever the time values
    ranks = np.unique(np.r_[t_fit, t_apply], return_inverse=True)[1].astype(np.int64)
    stride = int(ranks.max()) + 2 if len(ranks) else 1
    key_fit = codes * stride + ranks[:len(t_fit)]
    order = np.argsort(key_fit, kind="stable")
    sorted_key, sorted_t, sorted_y, sorted_fold = key_fit[order], t_fit[order], y[order], inner[order]
    decay = np.log(2.0) / (max(half_life_days, 1e-9) * DAY)

    def query(code: np.ndarray, rank: np.ndarray, t: np.ndarray, fold: np.ndarray | None, prior: np.ndarray):
        seen = code >= 0
        safe = np.where(seen, code, 0)
        pos = np.searchsorted(sorted_key, safe * stride + rank, side="left")  # first fit post not earlier
        start = np.searchsorted(sorted_key, safe * stride, side="left")       # the user's first fit post
        wsum, wy = np.zeros(len(code)), np.zeros(len(code))
        for lag in range(1, max_lags + 1):
            j = pos - lag
            ok = seen & (j >= start)
            if not ok.any():
                break
            jj = np.where(ok, j, 0)
            if fold is not None:
                ok &= sorted_fold[jj] != fold
            w = np.where(ok, np.exp(-decay * np.maximum(t - sorted_t[jj], 0.0)), 0.0)
            wsum += w
            wy += w * sorted_y[jj]
        mean = (wy + smoothing * prior) / np.maximum(wsum + smoothing, 1e-12)
        return pd.DataFrame({"te_user_trend": np.where(wsum + smoothing > 0, mean, prior), "te_user_trend_w": wsum})

    fit = query(codes.astype(np.int64), ranks[:len(t_fit)], t_fit, inner if window == "folds" else None,
                fold_priors(y, inner))
    apply = query(codes_apply.astype(np.int64), ranks[len(t_fit):], t_apply, None,
                  np.full(len(t_apply), y.mean() if len(y) else 0.0))
    return fit, apply


def similar_user_statistics(keys_fit: pd.DataFrame, y_fit: np.ndarray, inner_fold: np.ndarray,
                            keys_apply: pd.DataFrame, smoothing: float | str = 10.0,
                            window: str = "folds") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Smoothed mean label of the OTHER users of the post's profile cluster (leave-user-out).

    smoothing: a weight, or `auto` (features.target_stats: estimated out of fold from the clusters' labels).
    window (features.target_stats): `folds`, a fit row sees the posts of the other inner folds, an
    apply row all fit posts, weighted to the fit rows' scale; `expanding` (a time holdout), every
    row the fit posts made strictly before it. Other users only, always: leaving the user out
    makes a seen user's value mean what it means for a new user at test time.
    keys_*: columns Uid and `_user_cluster` (and Postdate for `expanding`).
    """
    _check_window(window)
    y = np.asarray(y_fit, np.float64)
    if len(y) == 0:  # nothing known: the prior 0 and no posts behind it
        return (pd.DataFrame({"te_similar_users_mean": np.zeros(0), "te_similar_users_n": np.zeros(0)}),
                pd.DataFrame({"te_similar_users_mean": np.zeros(len(keys_apply)),
                              "te_similar_users_n": np.zeros(len(keys_apply))}))
    inner = _compact_folds(inner_fold)
    uid_codes, uid_uniques = pd.factorize(np.r_[keys_fit["Uid"].astype(str).to_numpy(),
                                                keys_apply["Uid"].astype(str).to_numpy()])
    u_fit, u_apply = uid_codes[:len(y)], uid_codes[len(y):]
    c_fit = keys_fit[CLUSTER].to_numpy(np.int64)
    c_apply = keys_apply[CLUSTER].to_numpy(np.int64)
    n_clusters = int(max(c_fit.max(initial=0), c_apply.max(initial=0))) + 1
    smoothing_fit, smoothing_apply = out_of_fold_smoothing(smoothing, c_fit, y, inner)
    # the user's own posts in the cluster are taken out (a user sits in one cluster; pairs keep it exact)
    pairs, pair_uniques = pd.factorize(np.r_[u_fit * n_clusters + c_fit, u_apply * n_clusters + c_apply])
    pair_fit, pair_apply = pairs[:len(y)], pairs[len(y):]
    if window == "expanding":
        t_fit, t_apply = (k["Postdate"].to_numpy(np.float64) for k in (keys_fit, keys_apply))
        (cs_f, cc_f), (cs_a, cc_a) = (earlier_sums(c_fit, t_fit, y, c, t)
                                      for c, t in ((c_fit, t_fit), (c_apply, t_apply)))
        (us_f, uc_f), (us_a, uc_a) = (earlier_sums(pair_fit, t_fit, y, p, t)
                                      for p, t in ((pair_fit, t_fit), (pair_apply, t_apply)))
        share = 1.0
    else:
        cs, cc = fold_sums(c_fit, y, inner, n_clusters)
        us, uc = fold_sums(pair_fit, y, inner, len(pair_uniques))
        # fit rows: other folds of the cluster; apply rows: all fit posts, weighted as in target_stats
        cs_f, cc_f = cs.sum(1)[c_fit] - cs[c_fit, inner], cc.sum(1)[c_fit] - cc[c_fit, inner]
        us_f, uc_f = us.sum(1)[pair_fit] - us[pair_fit, inner], uc.sum(1)[pair_fit] - uc[pair_fit, inner]
        cs_a, cc_a, us_a, uc_a = cs.sum(1)[c_apply], cc.sum(1)[c_apply], us.sum(1)[pair_apply], uc.sum(1)[pair_apply]
        share = (cs.shape[1] - 1) / cs.shape[1]
    s, c = cs_f - us_f, cc_f - uc_f  # minus the user's own posts
    s_a, c_a = share * (cs_a - us_a), share * (cc_a - uc_a)
    fit_mean = shrunk_mean(s, c, fold_priors(y, inner), smoothing_fit)
    apply_mean = shrunk_mean(s_a, c_a, y.mean(), smoothing_apply)
    return (pd.DataFrame({"te_similar_users_mean": fit_mean, "te_similar_users_n": c}),
            pd.DataFrame({"te_similar_users_mean": apply_mean, "te_similar_users_n": c_a}))


def _check_window(window: str) -> None:
    if window not in WINDOWS:
        raise ValueError(f"user statistics: window must be one of {WINDOWS}, got {window!r}")
