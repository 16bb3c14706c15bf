"""Figures of the model side of a run: tuning history, feature importance, predicted against true.

Each function takes plain arrays or tables and returns a `matplotlib.figure.Figure`
built without pyplot, so a notebook draws it inline and a headless stage saves it
with `fig.savefig(path)`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

LABEL = "popularity  log2(views/day + 1)"
COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#7f7f7f"}
ACCENT = "#d62728"


def wrap_titles(fig: Figure) -> Figure:
    """Break titles that are wider than the figure into lines instead of clipping them."""
    for text in [ax.title for ax in fig.axes] + list(fig.texts):  # fig.texts: the suptitle
        text.set_wrap(True)
    return fig


def _figure(width: float = 7.5, height: float = 4.2):
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots()


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def optimisation_history(trials: pd.DataFrame, metric: str = "src", direction: str = "maximize") -> Figure:
    """Each trial's validation value in trial order, pruned trials at their last reported value,
    and the best value so far.

    trials: columns number, state, value (None unless complete) and optionally last_value.
    """
    fig, ax = _figure()
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
    fig, ax = _figure(7.5, max(3.0, 0.22 * len(series) + 1.0))
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
    fig, ax = _figure(6.0, 5.2)
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
