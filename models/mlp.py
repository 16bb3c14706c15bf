"""A small MLP behind the project's model contract: fit(X, y, X_val, y_val), predict(X).

The neural member the SMP winners blend with their trees, on the same feature blocks. Everything
it learns about the features is learnt inside `fit`, from the rows it is fit on:
- numeric columns: +-inf counts as missing; a quantile transform to a normal shape (heavy-tailed
  counts stay in range), then missing -> 0 plus a missing-value indicator per column that had
  any; columns constant on the fit rows are dropped (they carry nothing and would only jump on
  new values);
- categorical columns (the blocks' pandas categoricals and `cat_columns`, e.g. the raw user id)
  -> integer codes of the values seen at least `min_count` times, 0 for every other value, so a
  test user never seen in train gets the learnt embedding of rare users; one embedding each;
- tag columns (`tag_columns`: space-separated tag strings) -> the mean of learnt tag embeddings
  (an EmbeddingBag) over the post's tags in the fit rows' vocabulary (tags seen `min_count`
  times, the `max_tags` most frequent); no known tag: a zero vector.
The network: [numbers, indicators, embeddings] -> two hidden ReLU layers with dropout -> one
output, trained with AdamW on the L2 loss of the standardised label. With a validation set it
stops when the validation L2 has not improved for `patience` epochs and keeps the best epoch's
weights (`best_iteration_`: epochs); without one it trains exactly `epochs` epochs.

Deterministic on a CPU: the seed fixes the weights and the batch order, torch runs with
`num_threads` threads and deterministic algorithms inside fit and predict (both restored after).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import QuantileTransformer
from torch import nn

from models.gbdt import _check_xy


@contextlib.contextmanager
def _torch_settings(num_threads: int):
    """Threads and deterministic algorithms for the duration of a fit or predict (process-wide in torch)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, num_threads))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


class Net(nn.Module):
    def __init__(self, n_numeric: int, cardinalities: list[int], n_tags: list[int], emb_dim: int, width: int,
                 dropout: float):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, emb_dim) for n in cardinalities)
        # padding_idx 0: index 0 is the unknown tag, dropped from the bag rather than averaged in
        self.bags = nn.ModuleList(nn.EmbeddingBag(n, emb_dim, mode="mean", padding_idx=0) for n in n_tags)
        n_in = n_numeric + emb_dim * (len(cardinalities) + len(n_tags))
        self.body = nn.Sequential(
            nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, 1),
        )

    def forward(self, numeric, codes, tags):
        parts = [numeric] + [e(codes[:, i]) for i, e in enumerate(self.embeddings)]
        parts += [bag(ids, offsets) for bag, (ids, offsets) in zip(self.bags, tags)]
        return self.body(torch.cat(parts, dim=1)).squeeze(1)


class MLPRegressor:
    """A two-hidden-layer MLP with learnt embeddings for categorical and tag columns (module docstring)."""

    def __init__(self, epochs: int = 100, width: int = 64, embedding_dim: int = 4, dropout: float = 0.3,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256, patience: int = 8,
                 min_count: int = 5, max_tags: int = 20_000, cat_columns: tuple[str, ...] = (),
                 tag_columns: tuple[str, ...] = (), n_quantiles: int = 1000, num_threads: int = 1, seed: int = 0):
        if epochs < 1 or width < 1 or embedding_dim < 1 or batch_size < 1 or patience < 1:
            raise ValueError("mlp: epochs, width, embedding_dim, batch_size and patience must be >= 1")
        if not 0.0 <= dropout < 1.0 or lr <= 0:
            raise ValueError(f"mlp: dropout must be in [0, 1) and lr > 0, got dropout {dropout}, lr {lr}")
        self.epochs, self.width, self.embedding_dim, self.dropout = epochs, width, embedding_dim, dropout
        self.lr, self.weight_decay, self.batch_size, self.patience = lr, weight_decay, batch_size, patience
        self.min_count, self.max_tags, self.n_quantiles = min_count, max_tags, n_quantiles
        self.cat_columns, self.tag_columns = tuple(cat_columns), tuple(tag_columns)
        self.num_threads, self.seed = num_threads, seed
        self.net_: Net | None = None
        self.best_iteration_: int | None = None

    # --- features ---------------------------------------------------------------------------
    def _fit_features(self, X: pd.DataFrame) -> None:
        self.columns_ = list(X.columns)
        self.tags_ = [c for c in self.tag_columns if c in X.columns]
        self.categorical_ = [c for c in X.columns if c not in self.tags_ and
                             (c in self.cat_columns or isinstance(X[c].dtype, pd.CategoricalDtype))]
        numeric = [c for c in X.columns if c not in self.tags_ and c not in self.categorical_]
        bad = [c for c in numeric if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))]
        if bad:
            raise ValueError(f"mlp: feature column {bad[0]!r} is {X[bad[0]].dtype}, expected numbers "
                             "(or a categorical / tag column)")
        values = _numbers(X, numeric)
        varies = [bool(np.nanmax(v) > np.nanmin(v)) if np.isfinite(v).any() else False for v in values.T]
        self.numeric_ = [c for c, keep in zip(numeric, varies) if keep]
        values = values[:, np.asarray(varies, dtype=bool)] if values.shape[1] else values
        self.indicate_ = np.isnan(values).any(axis=0)
        self.quantiles_ = None
        if self.numeric_:
            self.quantiles_ = QuantileTransformer(n_quantiles=max(2, min(self.n_quantiles, len(X))),
                                                  output_distribution="normal", subsample=100_000,
                                                  random_state=self.seed).fit(values)
        # code 0: unseen or rarer than min_count (kept apart from the real categories)
        self.vocab_ = {c: _vocabulary(_strings(X[c]), self.min_count) for c in self.categorical_}
        self.tag_vocab_ = {c: _vocabulary(_split_tags(X[c]).explode().dropna(), self.min_count, self.max_tags)
                           for c in self.tags_}

    def _features(self, X: pd.DataFrame):
        if list(X.columns) != self.columns_:
            raise ValueError("features must have the columns the model was fit on, in the same order")
        values = _numbers(X, self.numeric_)
        parts = []
        if self.numeric_:
            parts = [np.nan_to_num(self.quantiles_.transform(values), nan=0.0),
                     np.isnan(values[:, self.indicate_]).astype(np.float64)]
        numeric = np.hstack(parts) if parts else np.zeros((len(X), 0))
        codes = np.zeros((len(X), len(self.categorical_)), dtype=np.int64)
        for i, c in enumerate(self.categorical_):
            codes[:, i] = _strings(X[c]).map(self.vocab_[c]).fillna(0).to_numpy(dtype=np.int64)
        tags = []
        for c in self.tags_:
            lists = _split_tags(X[c])
            ids = lists.explode().map(self.tag_vocab_[c]).fillna(0).to_numpy(dtype=np.int64)
            counts = lists.str.len().to_numpy()
            # explode keeps one (NaN -> unknown 0) row for a post without tags: one id per post at least
            tags.append((ids, np.maximum(counts, 1)))
        return torch.as_tensor(numeric, dtype=torch.float32), torch.as_tensor(codes), tags

    @staticmethod
    def _batch_tags(tags, rows: np.ndarray):
        """The EmbeddingBag inputs (ids, offsets) of the posts `rows` of each tag column."""
        out = []
        for ids, counts in tags:
            starts = np.cumsum(counts) - counts
            n = counts[rows]
            offsets = np.cumsum(n) - n
            take = np.repeat(starts[rows] - offsets, n) + np.arange(n.sum())
            out.append((torch.as_tensor(ids[take]), torch.as_tensor(offsets, dtype=torch.int64)))
        return out

    def _forward(self, net: Net, features) -> np.ndarray:
        numeric, codes, tags = features
        net.eval()
        with torch.no_grad():
            out = net(numeric, codes, self._batch_tags(tags, np.arange(len(numeric))))
        return out.double().numpy() * self.y_scale_ + self.y_mean_

    # --- model contract ---------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame | None = None,
            y_val: np.ndarray | None = None) -> "MLPRegressor":
        _check_xy(X, y)
        if X_val is not None:
            _check_xy(X_val, y_val)
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        with _torch_settings(self.num_threads):
            self._fit_features(X)
            numeric, codes, tags = self._features(X)
            target = torch.as_tensor((y - self.y_mean_) / self.y_scale_, dtype=torch.float32)
            torch.manual_seed(self.seed)
            net = Net(numeric.shape[1], [len(self.vocab_[c]) + 1 for c in self.categorical_],
                      [len(self.tag_vocab_[c]) + 1 for c in self.tags_], self.embedding_dim, self.width, self.dropout)
            optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            order = torch.Generator().manual_seed(self.seed)
            val = None if X_val is None else (self._features(X_val), np.asarray(y_val, dtype=np.float64))
            best, best_loss, best_state, waited = self.epochs, np.inf, None, 0
            for epoch in range(1, self.epochs + 1):
                net.train()
                for rows in torch.randperm(len(y), generator=order).split(self.batch_size):
                    if len(rows) < 2 and len(y) >= 2:  # a batch of one adds only noise
                        continue
                    r = rows.numpy()
                    loss = nn.functional.mse_loss(net(numeric[r], codes[r], self._batch_tags(tags, r)), target[r])
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                if val is None:
                    continue
                val_loss = float(np.mean((self._forward(net, val[0]) - val[1]) ** 2))
                if val_loss < best_loss:
                    best, best_loss, waited = epoch, val_loss, 0
                    best_state = {k: v.clone() for k, v in net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
        self.net_, self.best_iteration_ = net, best
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.net_ is None:
            raise RuntimeError("fit the model before predict")
        with _torch_settings(self.num_threads):
            return self._forward(self.net_, self._features(X))


def _numbers(X: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if not columns:
        return np.zeros((len(X), 0))
    values = X[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(values), values, np.nan)  # an absurd +-inf is a missing value here


def _strings(column: pd.Series) -> pd.Series:
    """Category values as strings (a missing value as ""), one key type for the vocabulary."""
    return column.astype(object).where(column.notna(), "").astype(str).reset_index(drop=True)


def _split_tags(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "").astype(str).str.split().reset_index(drop=True)


def _vocabulary(values: pd.Series, min_count: int, limit: int | None = None) -> dict[str, int]:
    """Value -> code 1..n for the values seen at least min_count times (the most frequent `limit`);
    ties in frequency broken by the value, so the codes do not depend on row order."""
    counts = values.value_counts()
    counts = counts[counts >= min_count]
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return {value: i + 1 for i, (value, _) in enumerate(ranked)}
