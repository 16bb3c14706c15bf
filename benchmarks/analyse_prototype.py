#!/usr/bin/env python
"""Why the prototype member adds little: the evidence, from a finished work folder.

    python benchmarks/analyse_prototype.py --work-dir work/demo/config-<digest>
    python benchmarks/analyse_prototype.py --work-dir <panel root>/work/full/demo-s0   # its one config folder

Reads the `proto`, `emb` and `meta` blocks, the train posts (label, Subcategory), the folds and
the `meta_emb_proto` member's summary, and prints (all on train posts, whose proto features are
out of fold; cross-validated figures use 5 folds over them):
- label: Spearman |rho| of each proto / emb column with the label; ridge R^2 of the label from
  emb, from proto, from both (what proto adds to a linear model of emb);
- subcategory: the share of each proto column's variance explained by the given subcategory
  (eta^2, one-hot means) against the same for emb columns, and the label's own eta^2;
- emb: ridge R^2 of each proto column from the emb block (how much of proto emb already holds);
- pretext: how often the network's own class is its top class (proto_p_sub == proto_top1) against
  a logistic regression on emb alone and the majority class: is the pretext task already solved,
  and is its answer (the subcategory) not already a given feature;
- LightGBM: the gain share of the proto columns in the member (and their rank), against their
  share of the columns;
- train/test: the spread of proto columns on test (mean of the K fold networks) against train
  (one network each), a shift the trees see and validation does not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.model_selection import KFold, cross_val_predict  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

MEMBER = "meta_emb_proto"


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c != "Pid" and not c.startswith("_")]


def _filled(frame: pd.DataFrame) -> np.ndarray:
    """Float matrix with NaN replaced by the column mean (0 for an all-NaN column)."""
    x = frame.to_numpy(dtype=np.float64)
    means = np.nan_to_num(np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)) if len(x) else 0.0
    return np.where(np.isfinite(x), x, means)


def _cv_r2(x: np.ndarray, y: np.ndarray, seed: int, alpha: float = 10.0) -> np.ndarray:
    """Cross-validated R^2 of each column of y (N, m) from x by standardised ridge."""
    y = np.atleast_2d(y.T).T
    pred = cross_val_predict(make_pipeline(StandardScaler(), Ridge(alpha=alpha)), x, y,
                             cv=KFold(5, shuffle=True, random_state=seed))
    pred = np.atleast_2d(pred.T).T
    resid = ((y - pred) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return np.where(total > 0, 1.0 - resid / np.maximum(total, 1e-300), np.nan)


def eta_squared(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Share of each column's variance explained by the group means (R^2 of a one-hot regression)."""
    codes, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(codes)).astype(np.float64)
    means = np.zeros((len(codes), x.shape[1]))
    np.add.at(means, inverse, x)
    means /= counts[:, None]
    between = ((means[inverse] - x.mean(axis=0)) ** 2).sum(axis=0)
    total = ((x - x.mean(axis=0)) ** 2).sum(axis=0)
    return np.where(total > 0, between / np.maximum(total, 1e-300), np.nan)


def _abs_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = []
    for j in range(x.shape[1]):
        col = x[:, j]
        out.append(abs(spearmanr(col, y).statistic) if np.ptp(col) > 0 else 0.0)
    return np.nan_to_num(np.asarray(out))


def _summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"n": 0}
    return {"n": int(len(values)), "mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4),
            "max": round(float(values.max()), 4)}


def gain_share(importance: dict[str, float], n_features: int, prefix: str = "proto_") -> dict:
    """Share of the member's total gain on columns named `prefix*`, their share of its columns, and
    the best rank among them. `importance` may be the top of the list only (`complete` says which)."""
    ranked = sorted(importance.items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in ranked)
    ours = [(i, v) for i, (name, v) in enumerate(ranked) if name.startswith(prefix)]
    return {"gain_share": round(sum(v for _, v in ours) / total, 4) if total > 0 else None,
            "columns_listed": len(ranked), "proto_columns_listed": len(ours),
            "best_rank": ours[0][0] + 1 if ours else None, "complete": len(ranked) >= n_features}


def prototype_evidence(proto: pd.DataFrame, emb: pd.DataFrame, label: np.ndarray, subcategory: np.ndarray,
                       seed: int = 0, max_rows: int = 5000) -> dict:
    """The figures of the module docstring except LightGBM's (`gain_share`), on the rows where
    every proto feature comes from a network (train posts, out of fold). Pure: frames in, dict out."""
    if len(proto) != len(emb) or len(proto) != len(label) or len(label) != len(subcategory):
        raise ValueError(f"proto ({len(proto)}), emb ({len(emb)}), labels ({len(label)}) and subcategories "
                         f"({len(subcategory)}) must have one row per post")
    label = np.asarray(label, dtype=np.float64)
    rows = np.flatnonzero(np.isfinite(label))
    if len(rows) > max_rows:  # the ridge and logistic fits stay seconds on a laptop
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    proto_cols, emb_cols = feature_columns(proto), feature_columns(emb)
    p = _filled(proto.iloc[rows][proto_cols])
    e = _filled(emb.iloc[rows][emb_cols])
    y, sub = label[rows], np.asarray(subcategory).astype(str)[rows]
    pc = [i for i, c in enumerate(proto_cols) if c.startswith("proto_pc")]
    out: dict = {"n_posts": int(len(rows)), "proto_columns": len(proto_cols), "emb_columns": len(emb_cols),
                 "n_subcategories": int(len(np.unique(sub)))}
    rho = _abs_spearman(p, y)
    out["label_abs_spearman"] = {"proto": _summary(rho), "emb": _summary(_abs_spearman(e, y)),
                                 "proto_top": {proto_cols[i]: round(float(rho[i]), 4) for i in np.argsort(-rho)[:3]}}
    # the most the pretext task's answer can tell about the label: it is the given subcategory
    out["label_subcategory_eta2"] = round(float(eta_squared(y[:, None], sub)[0]), 4)
    both = np.concatenate([e, p], axis=1)
    out["label_ridge_r2"] = {name: round(float(_cv_r2(x, y, seed)[0]), 4)
                             for name, x in (("emb", e), ("proto", p), ("emb+proto", both))}
    out["subcategory_eta2"] = {"proto_pc": _summary(eta_squared(p[:, pc], sub)) if pc else {"n": 0},
                               "proto_all": _summary(eta_squared(p, sub)), "emb": _summary(eta_squared(e, sub))}
    out["proto_from_emb_r2"] = {"proto_pc": _summary(_cv_r2(e, p[:, pc], seed)) if pc else {"n": 0},
                                "proto_all": _summary(_cv_r2(e, p, seed))}
    # pretext: the network's answer, and what a linear read of emb gets
    pretext: dict = {"majority_class": round(float(pd.Series(sub).value_counts(normalize=True).iloc[0]), 4)}
    if {"proto_p_sub", "proto_top1"} <= set(proto_cols):
        own = proto.iloc[rows]["proto_p_sub"].to_numpy(np.float64)
        top = proto.iloc[rows]["proto_top1"].to_numpy(np.float64)
        known = np.isfinite(own)
        pretext["network_top1_accuracy"] = round(float(np.mean(own[known] >= top[known] - 1e-6)), 4)
        pretext["network_own_class_prob_mean"] = round(float(np.nanmean(own)), 4)
    if len(np.unique(sub)) > 1:
        cv = KFold(5, shuffle=True, random_state=seed)
        logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
        for name, x in (("emb_logistic_accuracy", e), ("proto_pc_logistic_accuracy", p[:, pc] if pc else None)):
            if x is not None:
                pretext[name] = round(float(np.mean(cross_val_predict(logistic, x, sub, cv=cv) == sub)), 4)
    out["pretext"] = pretext
    return out


def train_test_spread(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Std on test over std on train of each proto column (test rows are the mean of K networks)."""
    cols = [c for c in feature_columns(train) if c in test.columns]
    ratio = []
    for c in cols:
        s_train, s_test = np.nanstd(train[c].to_numpy(np.float64)), np.nanstd(test[c].to_numpy(np.float64))
        if s_train > 0:
            ratio.append(s_test / s_train)
    return {"test_over_train_std": _summary(np.asarray(ratio))}


def config_folder(work_dir: Path) -> Path:
    """The config folder holding features/proto_train.parquet: `work_dir` itself, or its newest config-*."""
    if (work_dir / "features" / "proto_train.parquet").is_file():
        return work_dir
    found = sorted(work_dir.glob("config-*/features/proto_train.parquet"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{work_dir}: no features/proto_train.parquet here or in a config-* folder below "
                                "(run the pipeline with the prototype stage on)")
    return found[-1].parent.parent


def analyse(work_dir: Path, seed: int = 0) -> dict:
    folder = config_folder(Path(work_dir))
    shared = folder.parent if folder.name.startswith("config-") else folder
    feats = folder / "features"
    proto = {s: pd.read_parquet(feats / f"proto_{s}.parquet") for s in ("train", "test")}
    emb = pd.read_parquet(feats / "emb_train.parquet")
    posts = pd.read_parquet(shared / "posts_train.parquet", columns=["Pid", "label", "Subcategory"])
    for name, frame in (("proto", proto["train"]), ("emb", emb)):
        if not np.array_equal(frame["Pid"].astype(str).to_numpy(), posts["Pid"].astype(str).to_numpy()):
            raise ValueError(f"{feats}/{name}_train.parquet does not list the train posts in order")
    result = {"folder": str(folder),
              **prototype_evidence(proto["train"], emb, posts["label"].to_numpy(),
                                   posts["Subcategory"].to_numpy(), seed),
              "spread": train_test_spread(proto["train"], proto["test"])}
    summaries = {}
    for member in ("meta_emb", MEMBER):
        path = folder / "preds" / f"{member}.json"
        if path.is_file():
            summaries[member] = json.loads(path.read_text())
    if MEMBER in summaries:
        info = summaries[MEMBER]
        gain = gain_share(info.get("feature_importance_gain", {}), info.get("n_features", 0))
        gain["column_share"] = round(len(feature_columns(proto["train"])) / max(info.get("n_features", 1), 1), 4)
        result["lightgbm"] = gain
    result["member_scores"] = {m: {k: round(v, 4) for k, v in s["score"].items() if isinstance(v, float)}
                               for m, s in summaries.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="a config folder, or a data set folder above one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = analyse(args.work_dir, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
