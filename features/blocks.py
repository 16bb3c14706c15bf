"""Joining feature blocks: each block is keyed by Pid, in the posts' row order."""
from __future__ import annotations

import numpy as np
import pandas as pd


def join_blocks(blocks: dict[str, pd.DataFrame], pids: np.ndarray) -> pd.DataFrame:
    """Concatenate the model features of several blocks, checking each lists `pids` in order.

    Columns starting with `_` (carried values such as a pretext loss) are dropped.
    """
    parts = []
    for name, frame in blocks.items():
        if "Pid" not in frame.columns:
            raise ValueError(f"feature block {name!r} has no Pid column")
        if len(frame) != len(pids) or not np.array_equal(frame["Pid"].astype(str).to_numpy(), pids):
            raise ValueError(f"feature block {name!r} does not list the posts in the posts table's order "
                             f"({len(frame)} rows for {len(pids)} posts): rebuild it")
        parts.append(frame.drop(columns=["Pid"] + [c for c in frame.columns if c.startswith("_")]))
    joined = pd.concat(parts, axis=1)
    duplicated = joined.columns[joined.columns.duplicated()].tolist()
    if duplicated:
        raise ValueError(f"feature columns appear in more than one block: {duplicated[:5]}")
    return joined
