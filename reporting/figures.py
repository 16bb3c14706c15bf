"""Figures of a run: the data, the embeddings, the prototype network, the tuning history, the
members' feature importance and the errors.

Each function takes plain arrays or tables and returns a `matplotlib.figure.Figure`
built without pyplot, so the same call draws inline in a notebook and saves a PNG
in a headless pipeline run (`fig.savefig(path)`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LABEL = "popularity  log2(views/day + 1)"
TRAIN_COLOUR, TEST_COLOUR, ACCENT = "#1f77b4", "#ff7f0e", "#d62728"
COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#7f7f7f"}  # Optuna trial states
DAY = 86400


def new_figure(width: float = 7.5, height: float = 4.2, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def wrap_titles(fig: Figure) -> Figure:
    """Break titles that are wider than the figure into lines instead of clipping them."""
    for text in [ax.title for ax in fig.axes] + list(fig.texts):  # fig.texts: the suptitle
        text.set_wrap(True)
    return fig


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


MAX_TIME_BINS = 400  # a figure's time axis gets at most this many bins, whatever the range of dates


def _dates(unix_seconds) -> np.ndarray:
    """datetime64[s] of Unix seconds; INT64_MIN (a missing date) becomes NaT. Numpy's range is
    unbounded for any int64, where pandas' nanosecond timestamps end in 2262."""
    return np.asarray(unix_seconds, dtype=np.int64).astype("datetime64[s]")


def time_bin_edges(dates: np.ndarray, max_bins: int = MAX_TIME_BINS) -> tuple[np.ndarray, int]:
    """Bin edges over the finite `dates` (datetime64[s], NaT ignored), and the bin width in weeks:
    weekly, or a whole number of weeks so that there are at most `max_bins` bins (a date in the
    year 5000 must not ask for 160,000 weekly bins)."""
    week = 7 * DAY
    seconds = dates[~np.isnat(dates)].astype(np.int64)
    low = (int(seconds.min()) // DAY) * DAY
    span_weeks = (int(seconds.max()) - low) // week + 1
    weeks = max(1, -(-span_weeks // max_bins))
    n_bins = -(-span_weeks // weeks)
    edges = low + np.arange(n_bins + 1, dtype=np.int64) * weeks * week
    return edges.astype("datetime64[s]"), weeks


# --- data ----------------------------------------------------------------------------
def label_histogram(labels) -> Figure:
    """Distribution of the train labels, with mean and median marked."""
    labels = np.asarray(labels, dtype=np.float64)
    labels = labels[np.isfinite(labels)]
    fig, (ax,) = new_figure()
    if len(labels) == 0:
        _empty(ax, "no labels")
        return fig
    ax.hist(labels, bins=min(60, max(10, len(labels) // 20)), color=TRAIN_COLOUR, alpha=0.85)
    for value, name, style in ((labels.mean(), "mean", "-"), (np.median(labels), "median", "--")):
        ax.axvline(value, color=ACCENT, linestyle=style, label=f"{name} {value:.2f}")
    ax.set_xlabel(LABEL)
    ax.set_ylabel("train posts")
    ax.set_title(f"Label distribution ({len(labels):,} train posts, std {labels.std():.2f})")
    ax.legend()
    return fig


def group_stats(values, groups) -> pd.DataFrame:
    """Count, mean and standard error of `values` per group, largest group first."""
    frame = pd.DataFrame({"value": np.asarray(values, dtype=np.float64), "group": np.asarray(groups)})
    stats = frame.groupby("group", sort=False)["value"].agg(["size", "mean", "std"])
    stats["sem"] = (stats["std"] / np.sqrt(stats["size"])).fillna(0.0)
    return stats.sort_values("size", ascending=False, kind="stable")


def popularity_by(labels, groups, xlabel: str, top: int | None = 25, ordered: bool = False) -> Figure:
    """Mean label per group (error bar: standard error) with the number of posts per group.

    ordered: the groups have a natural order (hours, months) and every one is drawn
    in that order as a line; otherwise the `top` largest groups are drawn as bars.
    """
    stats = group_stats(labels, groups)
    if ordered:
        stats = stats.sort_index()
    elif top is not None and len(stats) > top:
        xlabel = f"{xlabel} (largest {top} of {len(stats)})"
        stats = stats.head(top)
    fig, (ax,) = new_figure(width=max(7.5, 0.32 * len(stats) + 2) if not ordered else 7.5)
    if stats.empty:
        _empty(ax, "no posts")
        return fig
    x = np.arange(len(stats))
    counts = ax.twinx()
    counts.bar(x, stats["size"], color="lightgrey", width=0.8, label="posts")
    counts.set_ylabel("posts", color="grey")
    counts.tick_params(axis="y", colors="grey")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.errorbar(x, stats["mean"], yerr=stats["sem"], fmt="o-" if ordered else "o", color=TRAIN_COLOUR,
                ecolor=TRAIN_COLOUR, capsize=2, label="mean label")
    ax.set_xticks(x)
    ax.set_xticklabels([str(g) for g in stats.index], rotation=0 if ordered else 60,
                       ha="center" if ordered else "right", fontsize=8 if len(stats) > 12 else 9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"mean {LABEL}")
    ax.set_title(f"Popularity by {xlabel.split(' (')[0]}")
    return fig


def user_share(uids) -> Figure:
    """How concentrated the posts are: share of posts against share of users, most active first."""
    counts = np.sort(pd.Series(np.asarray(uids)).value_counts().to_numpy())[::-1]
    fig, (ax,) = new_figure(width=6.0)
    if len(counts) == 0:
        _empty(ax, "no posts")
        return fig
    users = np.arange(1, len(counts) + 1) / len(counts)
    posts = np.cumsum(counts) / counts.sum()
    ax.plot(np.r_[0, users] * 100, np.r_[0, posts] * 100, color=TRAIN_COLOUR, label="posts")
    ax.plot([0, 100], [0, 100], color="grey", linestyle=":", label="every user posts equally")
    for share in (0.01, 0.1):
        n = max(1, int(round(share * len(counts))))
        ax.plot(n / len(counts) * 100, posts[n - 1] * 100, "o", color=ACCENT)
        ax.annotate(f"top {share:.0%} of users: {posts[n - 1]:.0%} of posts", (n / len(counts) * 100, posts[n - 1] * 100),
                    textcoords="offset points", xytext=(8, -12), fontsize=9)
    ax.set_xlabel("users, most active first (%)")
    ax.set_ylabel("posts (cumulative %)")
    ax.set_title(f"Users' share of posts ({len(counts):,} users, median {np.median(counts):.0f} posts each)")
    ax.legend(loc="lower right")
    return fig


def post_period(train_dates, test_dates, train_labels=None) -> Figure:
    """Posts per week (or per few weeks, for a long range) of train and test, and the mean train
    label per bin. Posts without a date (NaT) are left out and counted in the title."""
    train_d, test_d = _dates(train_dates), _dates(test_dates)
    fig, (ax,) = new_figure(width=8.5)
    both = np.concatenate([train_d, test_d])
    undated = int(np.isnat(both).sum())
    if undated == len(both):
        _empty(ax, "no dated posts")
        return fig
    edges, weeks = time_bin_edges(both)
    unit = "week" if weeks == 1 else f"{weeks} weeks"
    counts = [np.histogram(d[~np.isnat(d)].astype(np.int64), bins=edges.astype(np.int64))[0] for d in (train_d, test_d)]
    left, width = edges[:-1], np.diff(edges)
    ax.bar(left, counts[0], width=width, align="edge", color=TRAIN_COLOUR, label=f"train ({len(train_d):,})")
    ax.bar(left, counts[1], width=width, align="edge", bottom=counts[0], color=TEST_COLOUR,
           label=f"test ({len(test_d):,})")
    ax.set_xlabel(f"post date (bins of one {unit})" if weeks == 1 else f"post date (bins of {unit})")
    ax.set_ylabel(f"posts per {unit}")
    if train_labels is not None and len(train_d):
        labels = np.asarray(train_labels, dtype=np.float64)
        dated = ~np.isnat(train_d) & np.isfinite(labels)
        seconds = train_d[dated].astype(np.int64)
        sums = np.histogram(seconds, bins=edges.astype(np.int64), weights=labels[dated])[0]
        n = np.histogram(seconds, bins=edges.astype(np.int64))[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(n > 0, sums / n, np.nan)
        labels_ax = ax.twinx()
        labels_ax.plot(left + width // 2, means, color="black", linewidth=1.2, label="mean train label")
        labels_ax.set_ylabel("mean train label", color="black")
        labels_ax.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("Train and test periods" + (f" ({undated:,} posts without a date left out)" if undated else ""))
    fig.autofmt_xdate()
    return fig


def missing_fractions(posts: pd.DataFrame) -> pd.Series:
    """Share of posts per column with no value: NaN/None, or an empty string."""
    shares = {}
    for column in posts.columns:
        values = posts[column]
        missing = values.isna()
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            missing |= values.astype("string").fillna("").str.strip().eq("")
        shares[column] = float(missing.mean()) if len(values) else 0.0
    return pd.Series(shares)


def missing_values(tables: dict[str, pd.DataFrame]) -> Figure:
    """Share of missing values per column and split (columns with no gap left out)."""
    shares = pd.DataFrame({split: missing_fractions(t) for split, t in tables.items()}).fillna(0.0)
    shares = shares[(shares > 0).any(axis=1)].sort_values(list(tables)[0])
    fig, (ax,) = new_figure(width=7.5, height=max(2.5, 0.32 * len(shares) + 1.2))
    if shares.empty:
        _empty(ax, "no missing values")
        return fig
    y = np.arange(len(shares))
    height = 0.8 / len(tables)
    colours = [TRAIN_COLOUR, TEST_COLOUR, "grey"]
    for i, split in enumerate(tables):
        ax.barh(y + i * height, shares[split] * 100, height=height, color=colours[i % 3], label=split)
    ax.set_yticks(y + height * (len(tables) - 1) / 2)
    ax.set_yticklabels(shares.index, fontsize=9)
    ax.set_xlabel("posts with no value (%)")
    ax.set_ylabel("column")
    ax.set_xlim(0, 100)
    ax.set_title("Missing values per column (empty strings count as missing)")
    ax.legend(loc="lower right")
    return fig


# --- embeddings ------------------------------------------------------------------------
def project_2d(X: np.ndarray, seed: int = 0):
    """A 2-D PCA of the rows of X (L2-normalised first); returns (coordinates, fitted PCA).

    PCA rather than t-SNE: it is fast and can place new points (prototypes) in the same map.
    """
    from sklearn.decomposition import PCA
    X = normalise_rows(X)
    pca = PCA(n_components=2, random_state=seed).fit(X)
    return pca.transform(X), pca


def place(pca, X) -> np.ndarray:
    """Put new points (e.g. prototypes) into a map made by `project_2d`."""
    return pca.transform(normalise_rows(X))


def normalise_rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def embedding_map(xy: np.ndarray, colour, title: str, colour_label: str, pca=None,
                  overlay: np.ndarray | None = None, overlay_names=None, overlay_label: str = "prototypes",
                  max_points: int = 5000, seed: int = 0, axis_labels: tuple[str, str] | None = None) -> Figure:
    """Scatter of a 2-D projection, coloured by a category (strings) or a value (numbers).

    overlay: extra points in the same map (e.g. class prototypes) drawn as labelled stars.
    """
    xy = np.asarray(xy, dtype=np.float64)
    colour = np.asarray(colour)
    rows = np.arange(len(xy))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    fig, (ax,) = new_figure(width=8.5, height=6.0)
    if len(rows) == 0:
        _empty(ax, "no posts")
        return fig
    if colour.dtype.kind in "fiu":
        points = ax.scatter(xy[rows, 0], xy[rows, 1], c=colour[rows].astype(float), cmap="viridis", s=6, alpha=0.7)
        fig.colorbar(points, ax=ax, label=colour_label)
    else:
        names = pd.Series(colour[rows]).value_counts().index.tolist()
        palette = _palette(len(names))
        for name, c in zip(names, palette):
            keep = colour[rows] == name
            ax.scatter(xy[rows][keep, 0], xy[rows][keep, 1], s=6, alpha=0.7, color=c, label=str(name))
        ax.legend(title=colour_label, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=3,
                  ncols=1 if len(names) <= 20 else 2)
    if overlay is not None and len(overlay):
        ax.scatter(overlay[:, 0], overlay[:, 1], marker="*", s=160, color="black", edgecolor="white",
                   linewidth=0.6, label=overlay_label, zorder=3)
        for (x, y), name in zip(overlay, overlay_names if overlay_names is not None else []):
            ax.annotate(str(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if axis_labels is not None:
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    elif pca is not None:
        ratio = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    else:
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    ax.set_title(title)
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps
    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def nearest_neighbours(X: np.ndarray, row: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The k rows most similar to `row` by cosine similarity (itself excluded) and their similarities."""
    X = normalise_rows(X)
    sims = X @ X[row]
    sims[row] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


def image_grid(images: list, captions: list[str], title: str = "", ncols: int = 5) -> Figure:
    """Images (paths or arrays; None for a missing image) in a grid with a caption each.

    Paths must already be checked against the data folder (`features.smpd.data_image_path`).
    """
    from PIL import Image
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(2.2 * ncols, 2.5 * nrows), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions):
        if isinstance(image, (str, Path)) and Path(image).is_file():
            with Image.open(image) as img:
                image = np.asarray(img.convert("RGB"))
        if isinstance(image, np.ndarray):
            ax.imshow(image)
        else:
            ax.text(0.5, 0.5, "no image", ha="center", va="center", color="grey", transform=ax.transAxes)
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# --- prototype network -----------------------------------------------------------------
def training_curves(history: pd.DataFrame, ncols: int = 3) -> Figure:
    """Per-epoch mean losses (columns other than `epoch` and `fold`), one line per fold, one panel
    per loss term in rows of `ncols` (wide enough to read on a page), one legend for the folds."""
    terms = [c for c in history.columns if c not in ("epoch", "fold")]
    ncols = max(1, min(ncols, len(terms)))
    nrows = max(1, -(-len(terms) // ncols))
    fig = Figure(figsize=(3.3 * ncols + 0.4, 2.9 * nrows + 0.6), dpi=100, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[max(len(terms), 1):]:
        ax.set_visible(False)
    axes = list(grid[:max(len(terms), 1)])
    if history.empty or not terms:
        _empty(axes[0], "no training history")
        return fig
    folds = sorted(history["fold"].unique()) if "fold" in history else [None]
    for ax, term in zip(axes, terms):
        for fold in folds:
            part = history if fold is None else history[history["fold"] == fold]
            ax.plot(part["epoch"], part[term], "o-", markersize=3, label=f"fold {fold}" if fold is not None else None)
        name = "total" if term == "loss" else term
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"mean {name} loss")
        ax.set_title(f"{name} loss")
    if folds != [None]:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(folds), 8),
                   fontsize=9)
    fig.suptitle(f"Prototype network: mean training losses per epoch ({len(folds)} inner-fold networks)")
    return fig


def confusion(true: np.ndarray, pred: np.ndarray, names: list[str], title: str = "Pretext task confusion",
              max_classes: int = 25) -> Figure:
    """Row-normalised confusion matrix (share of each true class predicted as each class).

    With more than `max_classes` classes only the most frequent true classes are shown.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    keep = true >= 0
    true, pred = true[keep], pred[keep]
    classes = pd.Series(true).value_counts().index.to_numpy()[:max_classes]
    classes = np.sort(classes)
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes) + 1))  # last column: predicted as a class not shown
    for t, p in zip(true, pred):
        if t in index:
            matrix[index[t], index.get(p, len(classes))] += 1
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    size = max(5.0, 0.32 * len(classes) + 2.5)
    fig, (ax,) = new_figure(width=size + 1.2, height=size)
    if len(classes) == 0:
        _empty(ax, "no labelled posts")
        return fig
    shown = share if share[:, -1].any() else share[:, :-1]
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    labels = [str(names[c]) for c in classes]
    ax.set_xticks(np.arange(shown.shape[1]))
    ax.set_xticklabels(labels + (["other"] if shown.shape[1] > len(classes) else []), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(classes)))
    ax.set_yticklabels(labels, fontsize=8)
    if len(classes) <= 12:
        for (i, j), value in np.ndenumerate(shown):
            if value >= 0.005:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else "black")
    accuracy = float((true == pred).mean()) if len(true) else float("nan")
    ax.set_xlabel("predicted class" + (" ('other': a class not shown)" if shown.shape[1] > len(classes) else ""))
    ax.set_ylabel("true class")
    ax.set_title(f"{title} (accuracy {accuracy:.1%}, {len(true):,} posts)")
    return fig


# --- ensemble and errors -------------------------------------------------------------
def param_importance(importances: dict[str, float], title: str = "Optuna parameter importance") -> Figure:
    """Horizontal bars of each tuned parameter's importance (e.g. optuna.importance.get_param_importances)."""
    series = pd.Series(importances, dtype=np.float64).sort_values()
    fig, (ax,) = new_figure(width=6.5, height=max(2.5, 0.35 * len(series) + 1.2))
    if series.empty:
        _empty(ax, "no tuned parameters")
        return fig
    ax.barh(np.arange(len(series)), series.to_numpy(), color=TRAIN_COLOUR)
    ax.set_yticks(np.arange(len(series)))
    ax.set_yticklabels(series.index, fontsize=9)
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_ylabel("parameter")
    ax.set_title(title)
    return fig


def error_by_group(labels, preds, groups, xlabel: str, top: int | None = 25) -> Figure:
    """MAE per group (bars) and mean signed error (pred - label, dots), largest groups first."""
    labels, preds = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    frame = pd.DataFrame({"abs": np.abs(preds - labels), "signed": preds - labels, "group": np.asarray(groups)})
    stats = frame.groupby("group", sort=False).agg(n=("abs", "size"), mae=("abs", "mean"), bias=("signed", "mean"))
    stats = stats.sort_values("n", ascending=False, kind="stable")
    name, shown = xlabel, "validation posts"
    if top is not None and len(stats) > top:
        shown += f"; largest {top} of {len(stats)}"
        stats = stats.head(top)
    fig, (ax,) = new_figure(width=max(7.5, 0.35 * len(stats) + 2))
    if stats.empty:
        _empty(ax, "no validation posts")
        return fig
    x = np.arange(len(stats))
    ax.bar(x, stats["mae"], color=TRAIN_COLOUR, label="MAE")
    ax.plot(x, stats["bias"], "o", color=ACCENT, label="mean error (pred - label)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(frame["abs"].mean(), color="grey", linestyle="--", linewidth=1, label=f"overall MAE {frame['abs'].mean():.3f}")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g} ({n})" for g, n in zip(stats.index, stats["n"])], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel(f"{name} ({shown})")
    ax.set_ylabel("error")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.25 * (high - low))  # room for the legend above the bars
    ax.set_title(f"Validation error by {name}")
    ax.legend(fontsize=8, loc="upper center", ncols=3)
    return fig


def error_over_time(labels, preds, dates, n_bins: int = 12) -> Figure:
    """Mean label and prediction (top) and MAE and mean signed error (bottom) over time,
    in bins with equal numbers of posts."""
    labels, preds = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    dates = np.asarray(dates, dtype=np.int64)
    fig = Figure(figsize=(8.0, 5.6), dpi=100, layout="constrained")
    level, err = fig.subplots(2, 1, sharex=True)
    if len(dates) == 0:
        _empty(err, "no validation posts")
        return fig
    order = np.argsort(dates, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, len(order))) if len(b)]
    centre = _dates([int(np.median(dates[b])) for b in bins])
    level.plot(centre, [labels[b].mean() for b in bins], "o-", color="black", label="mean label")
    level.plot(centre, [preds[b].mean() for b in bins], "s--", color=TRAIN_COLOUR, label="mean prediction")
    level.set_ylabel("mean popularity")
    level.legend(fontsize=8)
    level.set_title("Validation posts over time: level (top) and error (bottom)")
    err.plot(centre, [np.abs(preds[b] - labels[b]).mean() for b in bins], "o-", color=TRAIN_COLOUR, label="MAE")
    err.plot(centre, [(preds[b] - labels[b]).mean() for b in bins], "s--", color=ACCENT,
             label="mean error (pred - label)")
    err.axhline(0, color="black", linewidth=0.8)
    err.set_ylabel("error")
    err.set_xlabel(f"post date ({len(bins)} bins of ~{len(order) // len(bins)} validation posts)")
    err.legend(fontsize=8)
    fig.autofmt_xdate()
    return fig


def prediction_histogram(train_labels, test_preds) -> Figure:
    """Test predictions against the train label distribution (density), means marked."""
    labels = np.asarray(train_labels, dtype=np.float64)
    preds = np.asarray(test_preds, dtype=np.float64)
    fig, (ax,) = new_figure()
    if len(preds) == 0:
        _empty(ax, "no predictions")
        return fig
    bins = np.histogram_bin_edges(np.concatenate([labels, preds]), bins=50)
    ax.hist(labels, bins=bins, density=True, alpha=0.55, color=TRAIN_COLOUR, label=f"train labels ({len(labels):,})")
    ax.hist(preds, bins=bins, density=True, alpha=0.55, color=TEST_COLOUR, label=f"test predictions ({len(preds):,})")
    ax.axvline(labels.mean(), color=TRAIN_COLOUR, linestyle="--", label=f"train label mean {labels.mean():.2f}")
    ax.axvline(preds.mean(), color=TEST_COLOUR, linestyle="--", label=f"test prediction mean {preds.mean():.2f}")
    ax.set_xlabel(LABEL)
    ax.set_ylabel("density")
    ax.set_title("Submission: test predictions against train labels")
    ax.legend(fontsize=8)
    return fig


def leaderboard_history(board: pd.DataFrame, current_run: str | None = None, dataset: str = "") -> Figure:
    """Validation (and test, where known) SRC of each leaderboard row in the order the rows were
    appended (oldest first); this run marked."""
    board = board.reset_index(drop=True)
    fig, (ax,) = new_figure(width=8.0)
    if board.empty:
        _empty(ax, "empty leaderboard")
        return fig
    x = np.arange(len(board))
    for column, name, colour in (("val_src", "validation SRC", TRAIN_COLOUR), ("test_src", "test SRC", TEST_COLOUR)):
        values = pd.to_numeric(board.get(column), errors="coerce")
        if values is not None and values.notna().any():
            ax.plot(x, values, "o-", color=colour, label=name, markersize=4)
    if current_run is not None:
        mine = np.flatnonzero(board["run"].astype(str).to_numpy() == current_run)
        for column in ("val_src", "test_src"):
            values = pd.to_numeric(board.get(column), errors="coerce")
            if values is not None and len(mine):
                ax.plot(mine, values.to_numpy()[mine], "o", markersize=12, markerfacecolor="none",
                        markeredgecolor=ACCENT, markeredgewidth=2)
        ax.plot([], [], "o", markersize=10, markerfacecolor="none", markeredgecolor=ACCENT, label="this run")
    step = max(1, len(board) // 20)
    ax.set_xticks(x[::step])
    ax.set_xticklabels(board["run"].astype(str).to_numpy()[::step], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("run, in the order submitted (oldest left)" + (f"; one name every {step} runs" if step > 1 else ""))
    ax.set_ylabel("SRC of the submitted blend")
    ax.set_title(f"SRC of every run on {dataset}" if dataset else "SRC of every run")
    ax.legend(fontsize=8)
    return fig


# --- the model side: tuning, feature importance, predicted against true --------------------------
def optimisation_history(trials: pd.DataFrame, metric: str = "src", direction: str = "maximize") -> Figure:
    """Each trial's validation value in trial order, pruned trials at their last reported value,
    and the best value so far.

    trials: columns number, state, value (None unless complete) and optionally last_value.
    """
    fig, (ax,) = new_figure()
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    if done.empty:
        _empty(ax, "no complete trial")
        return fig
    ax.scatter(done["number"], done["value"], s=22, color=COLOURS["COMPLETE"], label="complete", zorder=3)
    pruned = trials[trials["state"] == "PRUNED"]
    if "last_value" in trials and len(pruned) and pruned["last_value"].notna().any():
        ax.scatter(pruned["number"], pruned["last_value"], s=22, marker="x", color=COLOURS["PRUNED"],
                   label=f"pruned ({len(pruned)}), last reported value")
    elif len(pruned):
        ax.plot([], [], "x", color=COLOURS["PRUNED"], label=f"pruned ({len(pruned)})")
    values = done["value"].to_numpy(dtype=np.float64)
    best = np.maximum.accumulate(values) if direction == "maximize" else np.minimum.accumulate(values)
    ax.step(done["number"], best, where="post", color=ACCENT, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric.upper()}")
    ax.set_title(f"Optuna optimisation history ({len(trials)} trials, best {best[-1]:.4f})")
    ax.legend(loc="lower right" if direction == "maximize" else "upper right")
    return fig


def feature_importance(importance: pd.Series, top: int = 25, title: str = "Feature importance (gain)") -> Figure:
    """Horizontal bars of the `top` features by total gain, largest at the top."""
    series = pd.Series(importance, dtype=np.float64).sort_values(ascending=False).head(top)
    fig, (ax,) = new_figure(7.5, max(3.0, 0.22 * len(series) + 1.0))
    if series.empty:
        _empty(ax, "no feature importance")
        return fig
    share = series / max(float(pd.Series(importance, dtype=np.float64).sum()), 1e-12)
    ax.barh(np.arange(len(series))[::-1], share.to_numpy(), color=COLOURS["COMPLETE"])
    ax.set_yticks(np.arange(len(series))[::-1], series.index, fontsize=8)
    ax.set_xlabel("share of the gain of the features listed")
    ax.set_title(title)
    return fig


def predicted_vs_true(labels, preds, title: str = "Validation: predicted against true") -> Figure:
    """Density of (true, predicted) pairs with the diagonal, and the three metrics in the title."""
    from models.metrics import score
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(preds, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    fig, (ax,) = new_figure(6.0, 5.2)
    if len(y) < 2:
        _empty(ax, "no validation predictions")
        return fig
    s = score(y, p)
    if len(y) > 2000:
        hb = ax.hexbin(y, p, gridsize=50, bins="log", cmap="Blues", mincnt=1)
        fig.colorbar(hb, ax=ax, label="posts")
    else:
        ax.scatter(y, p, s=6, alpha=0.5, color=COLOURS["COMPLETE"])
    low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([low, high], [low, high], color=ACCENT, linewidth=1, label="predicted = true")
    ax.set_xlabel(f"true {LABEL}")
    ax.set_ylabel("predicted")
    ax.set_title(f"{title}\nSRC {s['src']:.4f}  MAE {s['mae']:.4f}  MSE {s['mse']:.4f}  ({len(y):,} posts)")
    ax.legend(loc="upper left")
    return fig


def adversarial_validation(train_likeness, test_likeness, features: pd.DataFrame, auc: float | None,
                           time_auc: float | None = None, top: int = 15) -> Figure:
    """Left: how test-like each post looks to the train-versus-test classifier (out-of-fold
    probability), train and test posts apart; right: the `top` features by univariate AUC's distance
    from 0.5 (bars: AUC - 0.5, right of 0 larger in test), their share of the classifier's gain beside them;
    grey: a feature that follows the post date, kept out of the classifier."""
    train = np.asarray(train_likeness, dtype=np.float64)
    test = np.asarray(test_likeness, dtype=np.float64)
    fig, (left, right) = new_figure(11.0, max(4.2, 0.24 * min(top, len(features)) + 1.4), ncols=2)
    if auc is None or not np.isfinite(train).any():
        _empty(left, "no classifier (too few posts or no usable feature)")
    else:
        bins = np.linspace(0.0, 1.0, 41)
        left.hist(train[np.isfinite(train)], bins=bins, density=True, alpha=0.55, color=TRAIN_COLOUR,
                  label=f"train posts ({len(train):,})")
        left.hist(test[np.isfinite(test)], bins=bins, density=True, alpha=0.55, color=TEST_COLOUR,
                  label=f"test posts ({len(test):,})")
        left.set_xlabel("out-of-fold probability of being a test post")
        left.set_ylabel("density")
        left.legend(fontsize=8)
    timing = f"; date alone {time_auc:.3f}" if time_auc is not None and np.isfinite(time_auc) else ""
    left.set_title(f"Train vs test: AUC {'n/a' if auc is None else f'{auc:.3f}'}{timing}")
    shown = features.head(top)
    if shown.empty:
        _empty(right, "no feature used")
    else:
        y = np.arange(len(shown))[::-1]
        offset = shown["univariate_auc"].to_numpy(dtype=np.float64) - 0.5
        used = shown["in_classifier"].to_numpy(dtype=bool) if "in_classifier" in shown else np.ones(len(shown), bool)
        colour = np.where(offset >= 0, TEST_COLOUR, TRAIN_COLOUR)
        right.barh(y, offset, color=np.where(used, colour, "#bbbbbb"))
        right.set_yticks(y, [f"{f}  (gain {g:.0%})" if u else f"{f}  (follows the post date)"
                             for f, g, u in zip(shown["feature"], shown["gain_share"], used)], fontsize=8)
        right.axvline(0.0, color="grey", linewidth=0.8)
        limit = max(0.05, float(np.abs(offset).max()) * 1.1)
        right.set_xlim(-limit, limit)
        right.set_xlabel("univariate AUC - 0.5  (right: larger in test)")
    right.set_title(f"Most shifted features (top {len(shown)} of {len(features)})")
    return fig
