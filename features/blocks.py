"""Joining feature blocks: each block is keyed by Pid, in the posts' row order."""
from __future__ import annotations

import numpy as np
import pandas as pd


def check_post_order(pids, expected, what: str, remedy: str) -> None:
    """Raise unless `pids` lists the posts `expected` lists, in the same order (Pids compared as text).

    Every table of a split is keyed by Pid in the posts table's row order (the test file's order
    is the submission's): what: the table checked; remedy: what rebuilds it."""
    pids, expected = np.asarray(pids).astype(str), np.asarray(expected).astype(str)
    if len(pids) != len(expected) or not np.array_equal(pids, expected):
        raise ValueError(f"{what} does not list the posts in the posts table's order "
                         f"({len(pids)} rows for {len(expected)} posts): {remedy}")


def join_blocks(blocks: dict[str, pd.DataFrame], pids: np.ndarray) -> pd.DataFrame:
    """Concatenate the model features of several blocks, checking each lists `pids` in order.

    Columns starting with `_` (carried values such as a pretext loss) are dropped.
    """
    parts = []
    for name, frame in blocks.items():
        if "Pid" not in frame.columns:
            raise ValueError(f"feature block {name!r} has no Pid column")
        check_post_order(frame["Pid"].to_numpy(), pids, f"feature block {name!r}", "rebuild it")
        parts.append(frame.drop(columns=["Pid"] + [c for c in frame.columns if c.startswith("_")]))
    joined = pd.concat(parts, axis=1)
    duplicated = joined.columns[joined.columns.duplicated()].tolist()
    if duplicated:
        raise ValueError(f"feature columns appear in more than one block: {duplicated[:5]}")
    return joined
