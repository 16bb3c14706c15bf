"""Side tables: what a team crawled itself, joined to the posts as the feature block `side`.

A side table is a CSV (UTF-8, header row) or parquet file with one key column and any number of
value columns: per user (follower and following counts, total views, account age) keyed by
`Uid` or `Pathalias`, or per post keyed by `Pid`. It is read by the rules of the official reader
(features/smpd.py, docs/guide.md "What is an error and what is a gap"):

Errors (SMPDFormatError naming file, row, field, value, expectation): a file that is not a regular
file, not UTF-8, not CSV or parquet (by its suffix), without rows or without value columns; no key
column, or more than one of Pid / Uid / Pathalias (which one is meant?); an empty key; a key listed
twice (both rows named: which row is meant?); a CSV row with more or fewer cells than the header; a
column name given twice; a value column holding numbers and, in some row, text that is not a number
(`1.2k`: the crawl's parser went wrong, and guessing would hide it); two tables giving the same
feature name.

Gaps (counted, the first case named): an empty cell or `nan`, `none`, `null`, `na`, `n/a` is
missing; a value that is not finite (`inf`, `1e400`) is missing; a negative value in a count-like
column (a name with a word such as count, views, followers, following, age, days) is missing, as
the official reader does for `photo_count`. `true` / `false` are 1 / 0.

Left out, with a warning and a line in the report: a column in which no value is a number (a user
name, a URL: text the trees cannot use), and a column with no value on any train post (the model
could learn nothing from it). Rows whose key matches no post are counted; posts without a row (a
user the crawl missed, a test user never crawled) get missing values, never zeros, and are counted
per split. No post is ever dropped: the block lists every post of the split, in the posts' order.

Feature names are `side_<table stem>_<column>` (characters other than letters, digits and `_`
become `_`), so a name says where it came from.
"""
from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.smpd import ReadReport, SMPDFormatError, _implausible, _note_gap

log = logging.getLogger(__name__)

KEY_COLUMNS = ("Pid", "Uid", "Pathalias")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
MISSING_TEXT = frozenset({"", "nan", "none", "null", "na", "n/a"})
BOOL_TEXT = {"true": 1.0, "false": 0.0}
# words that make a column a count or an age, which cannot be negative (a negative one is a gap)
COUNT_WORDS = frozenset({"count", "counts", "views", "view", "followers", "follower", "following", "favorites",
                         "favourites", "faves", "comments", "photos", "posts", "contacts", "groups", "likes",
                         "age", "days", "members"})
# a per-post column that follows the train labels this closely is the label itself (views, say)
LABEL_LIKE_SPEARMAN = 0.98


@dataclass
class SideTable:
    """One side table as read: its key column, the key of each row and its numeric value columns."""
    path: Path
    key: str
    keys: np.ndarray  # str, one per row
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # feature name -> float64, one per row
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    report: ReadReport = field(default_factory=ReadReport)


def feature_prefix(path: Path) -> str:
    return "side_" + _clean_name(Path(path).stem)


def _clean_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_") or "col"


def _words(name: str) -> set[str]:
    """Lower-case words of a column name: `followerCount`, `follower_count` -> {follower, count}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return {w.lower() for w in re.split(r"[^0-9A-Za-z]+", spaced) if w}


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text (the rules below decide what it is); cells counted against the header."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        row = raw[:err.start].count(b"\n")
        raise SMPDFormatError(path, f"not UTF-8 text: byte {raw[err.start:err.start + 1]!r} in line {row + 1}; "
                                    "expected a UTF-8 CSV file with a header row") from None
    try:
        lines = [(i, cells) for i, cells in enumerate(csv.reader(io.StringIO(text, newline=""))) if cells]
    except csv.Error as err:
        raise SMPDFormatError(path, f"not a CSV file this reader can parse: {err}") from None
    if not lines:
        raise SMPDFormatError(path, "empty file: expected a header row naming the key column (Pid, Uid or "
                                    "Pathalias) and the value columns")
    header = [c.strip() for c in lines[0][1]]
    _check_header(path, header)
    rows = []
    for row, (_, cells) in enumerate(lines[1:]):
        if len(cells) != len(header):
            raise SMPDFormatError(path, f"{len(cells)} cells for the header's {len(header)} ({header}); expected "
                                        "one cell per column in every row", row=row)
        rows.append(cells)
    return pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)


def _check_header(path: Path, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            raise SMPDFormatError(path, f"column {i} has no name; expected a header row naming every column")
        if name in seen:
            raise SMPDFormatError(path, f"column {name!r} given twice (columns {seen[name]} and {i}): which one "
                                        "is meant?", field=name)
        seen[name] = i


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow's many error kinds, told in one line
        raise SMPDFormatError(path, f"not a parquet file this reader can read ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''})") from None
    # a key written as the frame's index (pandas keeps it in the file's metadata) becomes a column again
    frame = frame.reset_index(drop=all(name is None for name in frame.index.names))
    _check_header(path, [str(c) for c in frame.columns])
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _load(path: Path) -> pd.DataFrame:
    if not path.is_file():  # stat only: a FIFO is never opened (it would block), nor a directory
        kind = "missing" if not path.exists() else ("a directory" if path.is_dir() else "not a regular file")
        raise SMPDFormatError(path, f"side table is {kind}; expected a CSV or parquet file")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path)
    raise SMPDFormatError(path, f"side table suffix {path.suffix!r}: expected .csv or .parquet")


def _key_values(path: Path, key: str, values: pd.Series) -> np.ndarray:
    """Keys as stripped text (a number 123 or 123.0 is '123'); an empty key or one listed twice is an error."""
    def text(v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return ""
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()
    keys = np.array([text(v) for v in values], dtype=object)
    empty = (keys == "") | ((keys == "None") if key == "Pathalias" else False)
    if empty.any():
        i = int(np.argmax(empty))
        raise SMPDFormatError(path, f"empty key {values.iloc[i]!r}: every row needs its {key}", row=i, field=key)
    duplicated = pd.Index(keys).duplicated(keep="first")
    if duplicated.any():
        i = int(np.argmax(duplicated))
        first = int(np.argmax(keys == keys[i]))
        raise SMPDFormatError(path, f"{key} {keys[i]!r} listed twice (rows {first} and {i}): which row is meant? "
                                    "keep one row per key", row=i, field=key)
    return keys.astype(str)


def _numbers(path: Path, name: str, values: pd.Series, report: ReadReport) -> np.ndarray | None:
    """A value column as float64 (gaps NaN), or None when no value in it is a number (a text column)."""
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        out = values.astype("float64").to_numpy(copy=True)
        given = ~np.isnan(out)
        raw = list(values)
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):  # a parquet timestamp: unix seconds
        stamps = pd.to_datetime(values, utc=True)
        out = ((stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy(dtype=np.float64, na_value=np.nan)
        given = ~np.isnan(out)
        raw = list(values)
    else:
        raw = list(values)
        if any(isinstance(v, (list, dict, tuple, bytes, np.ndarray)) for v in raw):
            kind = next(type(v).__name__ for v in raw if isinstance(v, (list, dict, tuple, bytes, np.ndarray)))
            raise SMPDFormatError(path, f"column holds {kind} values; expected numbers", field=name)
        text = pd.Series(["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
                          for v in raw], dtype=object)
        lower = text.str.lower()
        missing = lower.isin(MISSING_TEXT).to_numpy()
        out = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=np.float64, copy=True)
        bools = lower.map(BOOL_TEXT).to_numpy(dtype=np.float64)
        out = np.where(np.isnan(out) & ~np.isnan(bools), bools, out)
        given = ~missing
        bad = given & np.isnan(out)
        if bad.any():
            if bad.sum() == given.sum():
                return None  # no value is a number: a text column (a name, a URL)
            i = int(np.argmax(bad))
            j = int(np.argmax(given & ~bad))
            raise SMPDFormatError(path, f"{raw[i]!r} is not a number, in a column of numbers (row {j}: {raw[j]!r}); "
                                        "expected a number or an empty cell", row=i, field=name)
    low = 0.0 if _words(name) & COUNT_WORDS else -np.inf
    outside = _implausible(out, low, np.inf) if low == 0.0 else given & ~np.isfinite(out)
    if outside.any():
        what = "negative or not finite (a count or an age)" if low == 0.0 else "not finite"
        _note_gap(report, path, name, outside, raw, what, "set missing")
        out = np.where(outside, np.nan, out)
    return out


def read_side_table(path: Path | str) -> SideTable:
    """One side table, checked: its key column, keys, numeric value columns (named side_<stem>_<column>)."""
    path = Path(path)
    frame = _load(path)
    keys = [c for c in frame.columns if c in KEY_COLUMNS]
    if len(keys) != 1:
        found = f"columns {list(frame.columns)[:12]}"
        why = "no key column" if not keys else f"{len(keys)} key columns {keys} (which one is meant? rename the others)"
        raise SMPDFormatError(path, f"{why} in {found}; expected exactly one of {list(KEY_COLUMNS)}")
    key = keys[0]
    if len(frame) == 0:
        raise SMPDFormatError(path, "no rows: expected one row per key")
    if len(frame.columns) == 1:
        raise SMPDFormatError(path, f"no value columns beside the key {key}; expected at least one column of numbers")
    table = SideTable(path, key, _key_values(path, key, frame[key]))
    prefix = feature_prefix(path)
    for name in frame.columns:
        if name == key:
            continue
        values = _numbers(path, name, frame[name], table.report)
        if values is None:
            table.left_out[name] = "no value is a number (text)"
            continue
        feature = f"{prefix}_{_clean_name(name)}"
        if feature in table.columns:
            raise SMPDFormatError(path, f"columns {name!r} and another give the same feature name {feature!r}; "
                                        "rename one", field=name)
        table.columns[feature] = values
        table.report.add(f"{name} missing", int(np.isnan(values).sum()))
    return table


def _post_keys(posts: pd.DataFrame, key: str) -> np.ndarray:
    """Each post's key as text; a post without one (Pathalias None) gets '' that no row has."""
    return posts[key].astype(object).where(posts[key].notna(), "").astype(str).to_numpy()


def build_side_block(paths: list[Path | str], train: pd.DataFrame, test: pd.DataFrame
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The block `side` of both splits (Pid plus every table's features, in the posts' order) and
    the report: per table what was read, filled, left out and matched."""
    tables = [read_side_table(p) for p in paths]
    owner: dict[str, Path] = {}
    for table in tables:
        for feature in table.columns:
            if feature in owner:
                raise SMPDFormatError(table.path, f"feature name {feature!r} is also made by {owner[feature]}: two "
                                                  "tables of the same file name, or columns that clean to the "
                                                  "same name; rename one")
            owner[feature] = table.path
    blocks = {s: {"Pid": posts["Pid"].to_numpy()} for s, posts in (("train", train), ("test", test))}
    reports = []
    for table in tables:
        index = pd.Index(table.keys)
        found = {s: index.get_indexer(_post_keys(posts, table.key)) for s, posts in (("train", train), ("test", test))}
        matched = np.zeros(len(table.keys), dtype=bool)
        for s, rows in found.items():
            matched[rows[rows >= 0]] = True
            for feature, values in table.columns.items():
                blocks[s][feature] = np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)
        entry = {"file": str(table.path), "key": table.key, "rows": len(table.keys),
                 "rows matching no post": int((~matched).sum()),
                 "train posts without a row": int((found["train"] < 0).sum()),
                 "test posts without a row": int((found["test"] < 0).sum()),
                 **table.report.counts, "columns": list(table.columns), "left out": dict(table.left_out),
                 "notes": list(table.report.notes)}
        if (~matched).any():
            entry["notes"].append(f"{table.path.name}, row {int(np.argmax(~matched))}: {table.key} "
                                  f"{str(table.keys[int(np.argmax(~matched))])!r} matches no post; "
                                  f"{int((~matched).sum())} row(s) unused")
        reports.append(entry)
    frames = {s: pd.DataFrame(b) for s, b in blocks.items()}
    _leave_out_empty(frames, tables, reports)
    _note_label_like(frames["train"], train, tables, reports)
    return frames["train"], frames["test"], {"tables": reports}


def _leave_out_empty(frames: dict[str, pd.DataFrame], tables: list[SideTable], reports: list[dict]) -> None:
    """A column with no value on any train post teaches the model nothing: left out, said why."""
    for table, entry in zip(tables, reports):
        for feature in list(entry["columns"]):
            if frames["train"][feature].isna().all():
                for s in frames:
                    frames[s] = frames[s].drop(columns=[feature])
                entry["columns"].remove(feature)
                entry["left out"][feature] = "no value on any train post"


def _note_label_like(block: pd.DataFrame, train: pd.DataFrame, tables: list[SideTable], reports: list[dict]) -> None:
    """A per-post column that ranks the train posts as their labels do is the label (views): said, not hidden."""
    if "label" not in train.columns or len(train) < 3:
        return
    labels = pd.Series(train["label"].to_numpy())
    for table, entry in zip(tables, reports):
        if table.key != "Pid":
            continue
        for feature in entry["columns"]:
            values = pd.Series(block[feature].to_numpy())
            if values.notna().sum() >= 3 and values.nunique() > 1:
                rho = values.corr(labels, method="spearman")
                if abs(rho) >= LABEL_LIKE_SPEARMAN:
                    entry["notes"].append(f"{feature} ranks the train posts as their labels do (Spearman {rho:.3f}): "
                                          "a per-post count such as views is the label itself; test posts only "
                                          "have it if it was crawled before their popularity was measured")
