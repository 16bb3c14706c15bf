"""Label-free metadata features: user, time, geo, text, tags, category codes.

Computed over train and test together (counts such as a user's posting
frequency use every post, never a label). Label-based features, the target
statistics, live in `features.target_stats` because they need the folds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86400.0
CATEGORICAL = ("Category", "Subcategory", "Concept", "Mediatype")


def split_tags(alltags: pd.Series) -> pd.Series:
    """Space-separated tag string -> list of tags (empty list for no tags)."""
    return alltags.fillna("").str.split()


def tag_pairs(alltags: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """Every tag of every post: (post position, tag), in post order.

    The same tags as `split_tags` (Python's str.split: runs of any Unicode whitespace),
    split in C by pyarrow instead of one Python call per post.
    """
    strings = pa.array(alltags, from_pandas=True)
    if isinstance(strings, pa.ChunkedArray):  # pandas' arrow-backed strings
        strings = strings.combine_chunks()
    if not pa.types.is_string(strings.type) and not pa.types.is_large_string(strings.type):
        strings = strings.cast(pa.large_string())  # all missing: a null column
    lists = pc.utf8_split_whitespace(strings)
    tags = pc.list_flatten(lists)
    posts = pc.list_parent_indices(lists).to_numpy()
    kept = pc.not_equal(tags, "")  # arrow keeps an empty string at leading or trailing whitespace
    return posts[kept.to_numpy(zero_copy_only=False)], tags.filter(kept)


def build_metadata(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Feature block `meta` for both splits, rows in the posts' order, keyed by Pid."""
    both = pd.concat([train.assign(_test=0), test.assign(_test=1)], ignore_index=True)
    feats = pd.DataFrame({"Pid": both["Pid"].to_numpy()})
    post = both["Postdate"].to_numpy(dtype=np.float64)

    # user
    feats["meta_photo_count"] = both["photo_count"].to_numpy()
    feats["meta_log_photo_count"] = np.log1p(both["photo_count"].clip(lower=0)).to_numpy()
    feats["meta_ispro"] = both["ispro"].to_numpy()
    feats["meta_canbuypro"] = both["canbuypro"].to_numpy()
    feats["meta_account_age_days"] = (post - both["photo_firstdate"].to_numpy()) / DAY
    feats["meta_taken_age_days"] = (post - both["photo_firstdatetaken"].to_numpy()) / DAY
    feats["meta_timezone_offset"] = both["timezone_offset"].to_numpy()
    feats["meta_has_pathalias"] = both["Pathalias"].notna().to_numpy().astype(np.float64)
    feats["meta_ispublic"] = both["Ispublic"].to_numpy()
    feats["meta_user_desc_len"] = both["user_description"].str.len().to_numpy()
    feats["meta_location_desc_len"] = both["location_description"].str.len().to_numpy()

    by_user = both.groupby("Uid", sort=False)["Postdate"]
    n_posts = by_user.transform("size").to_numpy()
    first = by_user.transform("min").to_numpy(dtype=np.float64)
    last = by_user.transform("max").to_numpy(dtype=np.float64)
    feats["meta_user_posts"] = n_posts
    feats["meta_user_posts_train"] = _count_where(both["Uid"], both["_test"] == 0)
    feats["meta_user_span_days"] = (last - first) / DAY
    feats["meta_user_posts_per_day"] = n_posts / np.maximum((last - first) / DAY, 1.0)
    feats["meta_days_since_user_first"] = (post - first) / DAY
    feats["meta_user_post_rank"] = by_user.rank(method="first").to_numpy() / n_posts
    feats["meta_user_n_subcategories"] = both.groupby("Uid", sort=False)["Subcategory"].transform("nunique").to_numpy()
    same_day = both.groupby(["Uid", (both["Postdate"] // DAY).astype(np.int64)], sort=False)["Pid"]
    feats["meta_user_posts_same_day"] = same_day.transform("size").to_numpy()

    # time: UTC, and local time where the user's offset is known
    stamp = pd.to_datetime(both["Postdate"], unit="s", utc=True)
    local = stamp + pd.to_timedelta(both["timezone_offset"].fillna(0.0), unit="h")
    feats["meta_hour_utc"] = stamp.dt.hour.to_numpy()
    feats["meta_hour_local"] = local.dt.hour.to_numpy()
    feats["meta_weekday"] = local.dt.day_of_week.to_numpy()
    feats["meta_month"] = stamp.dt.month.to_numpy()
    feats["meta_day_of_year"] = stamp.dt.day_of_year.to_numpy()
    span = max(post.max() - post.min(), 1.0)
    feats["meta_period_position"] = (post - post.min()) / span
    feats["meta_postdate_days"] = (post - post.min()) / DAY

    # geo
    feats["meta_latitude"] = both["Latitude"].to_numpy()
    feats["meta_longitude"] = both["Longitude"].to_numpy()
    feats["meta_geoaccuracy"] = both["Geoaccuracy"].to_numpy()
    feats["meta_has_geo"] = both["Latitude"].notna().to_numpy().astype(np.float64)

    # text and tags
    title = both["Title"].fillna("")
    tag_post, tags = tag_pairs(both["Alltags"])
    n_tags = np.bincount(tag_post, minlength=len(both))
    feats["meta_title_len"] = title.str.len().to_numpy()
    feats["meta_title_words"] = title.str.split().str.len().to_numpy()
    feats["meta_title_empty"] = (title == "").to_numpy().astype(np.float64)
    feats["meta_n_tags"] = n_tags
    feats["meta_tags_len"] = both["Alltags"].fillna("").str.len().to_numpy()
    feats["meta_tags_empty"] = (n_tags == 0).astype(np.float64)
    feats["meta_is_video"] = (both["Mediatype"] == "video").to_numpy().astype(np.float64)
    feats["meta_has_image"] = both["img_exists"].to_numpy().astype(np.float64)
    feats = feats.join(tag_frequency_features(tag_post, tags, len(both)))

    # category codes: one code book for both splits, so test codes mean what train codes mean
    for name in CATEGORICAL:
        values = both[name].fillna("")
        feats[f"meta_{name.lower()}"] = pd.Categorical(values, categories=sorted(values.unique()))

    n_train = len(train)
    return feats.iloc[:n_train].reset_index(drop=True), feats.iloc[n_train:].reset_index(drop=True)


def _count_where(keys: pd.Series, mask: pd.Series) -> np.ndarray:
    counts = keys[mask.to_numpy()].value_counts()
    return keys.map(counts).fillna(0).to_numpy(dtype=np.float64)


def tag_frequency_features(tag_post: np.ndarray, tags: pa.Array, n_posts: int) -> pd.DataFrame:
    """How common a post's tags are over all posts: mean, max and min of log tag counts.

    tag_post, tags: the (post position, tag) pairs of `tag_pairs`.
    """
    codes = pc.dictionary_encode(tags).indices.to_numpy()
    log_counts = np.log1p(np.bincount(codes)[codes].astype(np.float64))
    mean, high, low = per_post_mean_max_min(tag_post, log_counts, n_posts)
    return pd.DataFrame({"meta_tag_freq_mean": mean, "meta_tag_freq_max": high, "meta_tag_freq_min": low})


def per_post_mean_max_min(post: np.ndarray, values: np.ndarray, n_posts: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, max and min of `values` per post, skipping NaN (NaN for a post with none).

    post: each value's post position, non-decreasing (pairs in post order).
    """
    valid = ~np.isnan(values)
    any_missing = not valid.all()
    post, values = post[valid], values[valid]
    mean, high, low = (np.full(n_posts, np.nan) for _ in range(3))
    if len(post):
        starts = np.flatnonzero(np.r_[True, post[1:] != post[:-1]])
        owners = post[starts]
        counts = np.diff(np.r_[starts, len(post)])
        # the sums pandas' groupby mean computes, so the features stay bit for bit what they were:
        # plain in-order sums when nothing is missing, Kahan-compensated ones otherwise
        sums = _compensated_sums(values, starts, counts) if any_missing else np.add.reduceat(values, starts)
        mean[owners] = sums / counts
        high[owners] = np.maximum.reduceat(values, starts)
        low[owners] = np.minimum.reduceat(values, starts)
    return mean, high, low


def _compensated_sums(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kahan sum of each run values[start:start + count], in order; vectorised over runs,
    one step per position within a run."""
    sums, compensation = np.zeros(len(starts)), np.zeros(len(starts))
    for j in range(int(counts.max())):
        runs = np.flatnonzero(counts > j)
        y = values[starts[runs] + j] - compensation[runs]
        t = sums[runs] + y
        compensation[runs] = (t - sums[runs]) - y
        sums[runs] = t
    return sums
