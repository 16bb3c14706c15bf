"""Feature block `emb`: encoder embeddings reduced by PCA for the tree model.

One PCA per modality (image, title, tags), fit on train rows only (image: rows
that have an image), applied to both splits. Rows without an image get NaN image
components (LightGBM treats them as missing, not as a black photo). When image
and text share one space (CLIP), the cosine of the image with the title and with
the tags is added: how well the words describe the picture.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from common.pca import PCA, ROWS_PER_STEP
from features.encoders import EncodedSplit


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), ROWS_PER_STEP):
        x = np.asarray(a[start:start + ROWS_PER_STEP], dtype=np.float32)
        y = np.asarray(b[start:start + ROWS_PER_STEP], dtype=np.float32)
        norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        out[start:start + ROWS_PER_STEP] = (x * y).sum(axis=1) / np.maximum(norm, 1e-12)
    return out


def embedding_features(train: EncodedSplit, test: EncodedSplit, train_pids, test_pids, pca_dim: int
                       ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Blocks `emb` for train and test (Pid first, then emb_* columns) and a summary of the PCAs."""
    for name, split, pids in (("train", train, train_pids), ("test", test, test_pids)):
        if len(split) != len(pids):
            raise ValueError(f"{name}: {len(split)} encoded rows for {len(pids)} posts; rerun the `encode` stage")
    columns = {"train": {"Pid": np.asarray(train_pids)}, "test": {"Pid": np.asarray(test_pids)}}
    summary, skipped = {}, {}
    has_train = np.asarray(train.has_image, bool)
    for modality, attr, fit_rows in (("img", "image", np.flatnonzero(has_train)),
                                     ("title", "title", None), ("tags", "tags", None)):
        x_train = getattr(train, attr)
        pca, reason = _fit_informative(x_train, fit_rows, pca_dim, attr)
        if pca is None:
            skipped[modality] = reason
            continue
        summary[modality] = {"dim": int(x_train.shape[1]), "components": len(pca.components_),
                             "explained_variance": float(pca.explained_variance_ratio_.sum())}
        for split_name, split in (("train", train), ("test", test)):
            reduced = pca.transform(getattr(split, attr))
            if modality == "img":
                reduced[~np.asarray(split.has_image, bool)] = np.nan
            for k in range(reduced.shape[1]):
                columns[split_name][f"emb_{modality}_{k}"] = reduced[:, k]
    for split_name, split in (("train", train), ("test", test)):
        if "img" in skipped:  # has_image is 0 for every train post: nothing to learn from it
            continue
        has_image = np.asarray(split.has_image, bool)
        columns[split_name]["emb_has_image"] = has_image.astype(np.float32)
        if split.shared_space:
            for text in (t for t in ("title", "tags") if t not in skipped):
                cos = _cosine(split.image, getattr(split, text))
                cos[~has_image] = np.nan
                columns[split_name][f"emb_cos_img_{text}"] = cos
    summary["skipped"] = skipped
    return pd.DataFrame(columns["train"]), pd.DataFrame(columns["test"]), summary


def _fit_informative(x: np.ndarray, rows: np.ndarray | None, pca_dim: int, what: str) -> tuple[PCA | None, str]:
    """The PCA of one modality, or None and why the modality holds no information in train."""
    n = len(x) if rows is None else len(rows)
    if n < 2:
        return None, f"{n} train posts have a usable {what}; a PCA needs at least 2"
    pca = PCA(pca_dim).fit(x, rows)
    if pca.total_variance_ <= 1e-12:  # e.g. every title empty: one embedding for all posts
        return None, f"every train post has the same {what} embedding (all empty?)"
    return pca, ""
