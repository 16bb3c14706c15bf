"""Reader of the official SMPD files: one typed table per split.

All files of a split are joined on Pid and checked to agree. The rule per field,
decided here once (docs/guide.md: "What is an error and what is a gap"):

Errors stop the run before any work, with an `SMPDFormatError` naming the file,
row, field, the value and what was expected: a file missing, not UTF-8 or not a
JSON array of objects; a required field (Uid, Pid, Category, Subcategory,
Postdate) absent; a Pid empty or listed twice; a Postdate that is not a number;
a label that is not a finite number; line counts that disagree with the posts.

Gaps are filled, counted in `read_report.json` and logged (the first case named
by file, row, field and value); the post is always kept, since every test post
must be in the submission: empty title or tags, `None` Pathalias, empty geo,
missing image file; a number that is not a number or not finite, or outside
its plausible range (`PLAUSIBLE`), becomes missing; a Postdate outside
`postdate_range()` becomes the split's median Postdate; text with characters
that cannot be stored (a lone UTF-16 surrogate) gets U+FFFD in their place; an
image path that is absolute or leaves the data folder is a missing image,
never opened (`image_path_problem`).
"""
from __future__ import annotations

import json
import logging
import posixpath
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import KeyTwice, json_object

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
JSON_FILES = {
    "category": ("Category", "Subcategory", "Concept"),
    "text": ("Title", "Mediatype", "Alltags"),
    "temporalspatial_information": ("Postdate", "Latitude", "Longitude", "Geoaccuracy"),
    "user_data": ("photo_firstdate", "photo_count", "ispro", "canbuypro", "timezone_offset",
                  "photo_firstdatetaken", "timezone_timezone_id", "user_description", "location_description"),
    "additional_information": ("Pathalias", "Ispublic", "Mediastatus"),
}
# fields a post cannot do without; every other field may be missing in a file (real releases differ)
REQUIRED_FIELDS = {"category": ("Uid", "Pid", "Category", "Subcategory"),
                   "temporalspatial_information": ("Uid", "Pid", "Postdate")}
NUMERIC_FIELDS = ("Latitude", "Longitude", "Geoaccuracy", "photo_firstdate", "photo_count", "ispro",
                  "canbuypro", "Ispublic")
TEXT_FIELDS = ("Category", "Subcategory", "Concept", "Title", "Mediatype", "Alltags", "timezone_timezone_id",
               "user_description", "location_description", "Mediastatus")

DAY_SECONDS = 86400
EARLIEST_POST = 946684800  # 2000-01-01 UTC: before any photo-sharing site (Flickr opened in 2004)
EARLIEST_TAKEN = -2208988800  # 1900-01-01 UTC: photos taken (scans of old prints included)
FUTURE_MARGIN_DAYS = 366  # a post dated later than a year from now is a corrupt value
# plausible range of each number (inclusive); a value outside it, or not finite, is set missing and counted.
# Dates are unix seconds; their upper bound is now + FUTURE_MARGIN_DAYS (None here).
PLAUSIBLE = {
    "Latitude": (-90.0, 90.0), "Longitude": (-180.0, 180.0), "Geoaccuracy": (0.0, 16.0),
    "photo_firstdate": (EARLIEST_POST, None), "photo_firstdatetaken": (EARLIEST_TAKEN, None),
    "photo_count": (0.0, np.inf), "ispro": (0.0, 1.0), "canbuypro": (0.0, 1.0), "Ispublic": (0.0, 1.0),
    "timezone_offset": (-14.0, 14.0),  # hours: the offsets in use run from UTC-12 to UTC+14
}


# the score is log2(views / days + 1): never negative, and 30 would be a billion views a day for every
# day a photo was online (SMPD's labels run from 0 to about 17); a label outside this is a corrupt file
LABEL_RANGE = (0.0, 30.0)
# a train split needs this many posts per validation fold for the folds, early stopping and tuning
MIN_POSTS_PER_FOLD = 5


def latest_plausible_date() -> int:
    """Unix seconds a year from now: later dates are corrupt values, not posts."""
    return int(time.time()) + FUTURE_MARGIN_DAYS * DAY_SECONDS


def postdate_range() -> tuple[int, int]:
    return EARLIEST_POST, latest_plausible_date()


def _describe_range(low: float, high: float, dates: bool) -> str:
    if dates:
        return f"{pd.Timestamp(low, unit='s'):%Y-%m-%d}..{pd.Timestamp(high, unit='s'):%Y-%m-%d}"
    return f"{low:g}..{high:g}"


class SMPDFormatError(ValueError):
    """Input that does not follow the official format, located by file, row and field."""

    def __init__(self, file: Path | str, message: str, row: int | None = None, field: str | None = None):
        where = str(file)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.file, self.row, self.field = str(file), row, field


@dataclass
class ReadReport:
    """What the reader had to fill in, per split: counted so the log can say it."""
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, n: int) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + int(n)


def _find(data_dir: Path, name: str) -> Path | None:
    """Find an official file at the top of data_dir or one or two folders down (releases nest them)."""
    for pattern in (name, f"*/{name}", f"*/*/{name}"):
        hits = sorted(data_dir.glob(pattern))
        if len(hits) > 1:
            raise SMPDFormatError(data_dir, f"{name} found more than once: {[str(h) for h in hits]}")
        if hits:
            return hits[0]
    return None


def official_file_names(split: str) -> dict[str, str]:
    """File name of each official file of one split (images aside), keyed like JSON_FILES."""
    names = {key: f"{split}_{key}.json" for key in JSON_FILES}
    names["img_filepath"] = f"{split}_img_filepath.txt"
    if split == "train":
        names["label"] = "train_label.txt"
    return names


def split_files(data_dir: Path, split: str) -> dict[str, Path]:
    """Paths of every official file of one split; a missing file is an error that lists what is expected."""
    names = official_file_names(split)
    found, missing = {}, []
    for key, name in names.items():
        path = _find(Path(data_dir), name)
        if path is None:
            missing.append(name)
        elif not path.is_file():  # stat only: a FIFO is never opened (it would block), nor a directory
            kind = "a directory" if path.is_dir() else "a FIFO, device or socket"
            raise SMPDFormatError(path, f"is {kind}, not a regular file; expected the official file {name}")
        else:
            found[key] = path
    if missing:
        hint = ""
        if split == "train" and len(missing) == len(names):
            hint = " (no train split: a run needs both train and test files)"
        raise SMPDFormatError(data_dir, f"missing file(s) {missing}{hint}; expected the official SMPD layout "
                                        f"({', '.join(names.values())})")
    return found


# a JSON escape of a UTF-16 surrogate, or one encoded as UTF-8 bytes (json.loads lets those pass):
# only files that have one can hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _note_key_twice(record: dict, twice: list) -> dict:
    if isinstance(record, KeyTwice):
        twice.append(record)
    return record


def _load_json_records(path: Path) -> tuple[list[dict], dict[str, int]]:
    """The records of one official file, and per field the number of text values repaired."""
    try:
        raw = path.read_bytes()
        twice: list[KeyTwice] = []
        data = json.loads(raw, object_pairs_hook=lambda pairs: _note_key_twice(json_object(pairs), twice))
    except json.JSONDecodeError as err:
        raise SMPDFormatError(path, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise SMPDFormatError(path, f"not UTF-8 text: {err}") from None
    if not isinstance(data, list):
        raise SMPDFormatError(path, f"expected a JSON array of objects, got a {type(data).__name__}")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise SMPDFormatError(path, f"expected an object, got {type(record).__name__}", row=i)
        if twice and (record is twice[0] or any(v is twice[0] for v in record.values())):
            raise SMPDFormatError(path, "key given twice in one object (which value is meant?)", row=i,
                                  field=twice[0].key)
    repaired = _repair_surrogates(data) if _SURROGATE_ESCAPE.search(raw) else {}
    return data, repaired


def _repair_surrogates(records: list[dict]) -> dict[str, int]:
    """Lone UTF-16 surrogates (valid JSON, not storable as UTF-8) -> U+FFFD; pairs become their character."""
    repaired: dict[str, int] = {}
    for record in records:
        for name, value in record.items():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    record[name] = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
                    repaired[name] = repaired.get(name, 0) + 1
    return repaired


_ABSENT = object()  # marks a field a record does not have (None is a field given as null)


def _field(records: list[dict], name: str) -> tuple[list, int]:
    """One field of every record (None where absent) and how many records lack it."""
    values = [r.get(name, _ABSENT) for r in records]
    absent = values.count(_ABSENT)  # C-level scan; the common case has none
    if absent:
        values = [None if v is _ABSENT else v for v in values]
    return values, absent


def _first_absent(records: list[dict], name: str) -> int | None:
    values = [r.get(name, _ABSENT) for r in records]
    return values.index(_ABSENT) if values.count(_ABSENT) else None


def _is_all_text(values: list) -> bool:
    return pd.api.types.infer_dtype(values, skipna=False) == "string"  # every value a str (C-level check)


def _pids(path: Path, values: list) -> np.ndarray:
    if _is_all_text(values):  # the official files: every Pid a string
        pids = np.array([v.strip() for v in values], dtype=object)
        empty = pids == ""
        if empty.any():
            raise SMPDFormatError(path, "missing Pid", row=int(np.argmax(empty)), field="Pid")
    else:
        pids = []
        for i, value in enumerate(values):
            if value is None or str(value).strip() == "":
                raise SMPDFormatError(path, "missing Pid", row=i, field="Pid")
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            pids.append(str(value).strip())
        pids = np.array(pids, dtype=object)
    duplicated = pd.Index(pids).duplicated(keep="first")
    if duplicated.any():
        i = int(np.argmax(duplicated))
        first = int(np.argmax(pids == pids[i]))
        raise SMPDFormatError(path, f"duplicate Pid {pids[i]} (first at row {first})", row=i, field="Pid")
    return pids


def to_float(values: list, path: Path, name: str, report: ReadReport, strict: bool = False) -> np.ndarray:
    """Numbers given as strings or numbers; empty means missing. `strict`: a missing value is an error."""
    series = pd.Series(values, dtype=object)
    out = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    # what the fast parse left missing: given-but-unparsed values get a second look, stripped as text
    unparsed = np.flatnonzero(np.isnan(out) & series.notna().to_numpy())
    bad = np.zeros(len(out), dtype=bool)
    if len(unparsed):
        text = series.iloc[unparsed].map(lambda v: str(v).strip())
        out[unparsed] = pd.to_numeric(text.replace("", np.nan), errors="coerce").to_numpy(dtype=np.float64)
        bad[unparsed] = (np.isnan(out[unparsed]) & (text != "").to_numpy()
                         & ~text.str.lower().isin(["nan", "none", "null"]).to_numpy())
    if bad.any():
        i = int(np.argmax(bad))
        if strict:
            raise SMPDFormatError(path, f"expected a number, got {values[i]!r}", row=i, field=name)
        report.add(f"{name} not a number (set missing)", int(bad.sum()))
    if strict and np.isnan(out).any():
        i = int(np.argmax(np.isnan(out)))
        raise SMPDFormatError(path, f"expected a number, got {values[i]!r}", row=i, field=name)
    return out


def _implausible(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Given values (not missing) outside [low, high]; inf and -inf are outside any range."""
    with np.errstate(invalid="ignore"):
        return ~np.isnan(values) & ~(np.isfinite(values) & (values >= low) & (values <= high))


def _note_gap(report: ReadReport, path: Path, name: str, bad: np.ndarray, shown: list | np.ndarray,
              what: str, action: str) -> None:
    """Count a gap and name its first case (file, row, field, value) for the log."""
    i = int(np.argmax(bad))
    report.add(f"{name} {what} ({action})", int(bad.sum()))
    report.notes.append(f"{path.name}, row {i}, field {name!r}: {shown[i]!r} is {what}; {action} in "
                        f"{int(bad.sum())} post(s)")


def _keep_plausible(values: np.ndarray, path: Path, name: str, report: ReadReport, raw: list) -> np.ndarray:
    """Values outside PLAUSIBLE[name] or not finite -> missing, counted, the first one named."""
    low, high = PLAUSIBLE[name]
    dates = high is None
    high = latest_plausible_date() if dates else high
    bad = _implausible(values, low, high)
    if bad.any():
        _note_gap(report, path, name, bad, raw, f"outside {_describe_range(low, high, dates)} or not finite",
                  "set missing")
        values = np.where(bad, np.nan, values)
    return values


def _postdates(values: list, path: Path, report: ReadReport) -> np.ndarray:
    """Unix seconds, required: not a number is an error; outside postdate_range() -> the split's median."""
    seconds = to_float(values, path, "Postdate", report, strict=True)
    low, high = postdate_range()
    bad = _implausible(seconds, low, high)
    if bad.all():
        raise SMPDFormatError(path, f"no Postdate in {_describe_range(low, high, True)} (got e.g. {values[0]!r}): "
                                    "expected unix seconds", row=0, field="Postdate")
    if bad.any():
        # a post is never dropped (every test post must be scored): a typical date keeps it in its split's period
        fill = float(np.floor(np.median(seconds[~bad])))
        _note_gap(report, path, "Postdate", bad, values,
                  f"outside {_describe_range(low, high, True)} or not finite", "set to the split's median date")
        seconds = np.where(bad, fill, seconds)
    return seconds.astype(np.int64)


def _to_text(values: list) -> np.ndarray:
    if _is_all_text(values):
        return np.array([v.strip() for v in values], dtype=object)
    return np.array(["" if v is None else str(v).strip() for v in values], dtype=object)


def _per_unique(values: list, parse) -> tuple[np.ndarray, np.ndarray]:
    """Apply `parse` (list -> (floats, unreadable flags)) once per distinct value: user fields repeat a lot."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    parsed, unreadable = parse(list(uniques))
    known = codes >= 0
    out = np.where(known, parsed[np.where(known, codes, 0)], np.nan)
    flags = known & unreadable[np.where(known, codes, 0)]
    return out, flags


def _timezone_hours(values: list, path: Path, report: ReadReport) -> np.ndarray:
    """'+08:00' style offsets, or numbers (hours, or seconds when larger than a day's hours)."""
    out, unreadable = _per_unique(values, _parse_timezones)
    report.add("timezone_offset unreadable (set missing)", int(unreadable.sum()))
    return out


def _parse_timezones(values: list) -> tuple[np.ndarray, np.ndarray]:
    out = np.full(len(values), np.nan)
    unreadable = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        s = "" if v is None else str(v).strip()
        if not s:
            continue
        try:
            if ":" in s:
                sign = -1.0 if s.startswith("-") else 1.0
                hours, minutes = s.lstrip("+-").split(":")[:2]
                out[i] = sign * (int(hours) + int(minutes) / 60.0)
            else:
                x = float(s)
                out[i] = x / 3600.0 if abs(x) > 24 else x
        except ValueError:
            unreadable[i] = True
    return out, unreadable


def _datetime_seconds(values: list, path: Path, name: str, report: ReadReport) -> np.ndarray:
    """`YYYY-MM-DD hh:mm:ss` -> unix seconds; empty is missing, anything else unreadable (missing, counted)."""
    def parse(uniques: list) -> tuple[np.ndarray, np.ndarray]:
        text = pd.Series([str(v).strip() for v in uniques], dtype=object)
        parsed = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce", utc=True)
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        unreadable = (parsed.isna() & ~text.isin(["", "None", "null"])).to_numpy()
        return seconds.to_numpy(dtype=np.float64, na_value=np.nan), unreadable
    seconds, unreadable = _per_unique(values, parse)
    if unreadable.any():
        _note_gap(report, path, name, unreadable, values, "not a date YYYY-MM-DD hh:mm:ss", "set missing")
    return seconds


def _read_lines(path: Path) -> list[str]:
    """Lines of a one-value-a-line file: UTF-8 (a byte order mark is dropped), any line ending."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        row = raw[:err.start].count(b"\n")
        line = raw.split(b"\n")[row].rstrip(b"\r")
        raise SMPDFormatError(path, f"not UTF-8 text: byte {raw[err.start:err.start + 1]!r} in line {line[:80]!r}; "
                                    "expected one UTF-8 value a line", row=row) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline is not a post
    return lines


def read_labels(path: Path, n_rows: int | None = None) -> np.ndarray:
    """One finite float a line; the count must match the split's rows when given."""
    lines = _read_lines(Path(path))
    labels = pd.to_numeric(pd.Series(lines, dtype=object), errors="coerce").to_numpy(dtype=np.float64, copy=True)
    for i in np.flatnonzero(~np.isfinite(labels)):  # what the fast parse refused: Python's float() decides
        line = lines[i]
        try:
            labels[i] = float(line.strip())
        except ValueError:
            raise SMPDFormatError(path, f"label {line.strip()!r} is not a number", row=int(i)) from None
        if not np.isfinite(labels[i]):
            raise SMPDFormatError(path, f"label {line.strip()!r} is not a finite number", row=int(i))
    low, high = LABEL_RANGE
    outside = ~((labels >= low) & (labels <= high))
    if outside.any():
        i = int(np.argmax(outside))
        raise SMPDFormatError(path, f"label {lines[i].strip()!r} is outside {low:g}..{high:g} (a score "
                                    "log2(views/days+1) cannot be negative nor that large)", row=i, field="label")
    if n_rows is not None and len(labels) != n_rows:
        raise SMPDFormatError(path, f"{len(labels)} labels for {n_rows} posts: the counts must match "
                                    "(one label a line, in post order)")
    return labels


def read_split(data_dir: Path | str, split: str) -> tuple[pd.DataFrame, ReadReport]:
    """Load one split into a typed table (one row per post, in file order)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    files = split_files(data_dir, split)
    report = ReadReport()
    ref_key = "category"
    columns: dict[str, object] = {}
    ref_pids = None
    ref_uids = None
    for key, wanted in JSON_FILES.items():
        path = files[key]
        records, repaired = _load_json_records(path)
        for name, n in repaired.items():
            report.add(f"{name} with characters that are not valid Unicode (replaced by U+FFFD)", n)
        for name in REQUIRED_FIELDS.get(key, ()):
            row = _first_absent(records, name)
            if row is not None:
                raise SMPDFormatError(path, "required field is missing", row=row, field=name)
        pids = _pids(path, _field(records, "Pid")[0])
        uids = _to_text(_field(records, "Uid")[0])
        if ref_pids is None:
            ref_pids, ref_uids = pids, uids
            if len(pids) == 0:
                raise SMPDFormatError(path, "no posts in this file")
            ref_index = pd.Index(ref_pids)
        else:
            same_order = len(pids) == len(ref_pids) and np.array_equal(pids, ref_pids)
            if not same_order and (len(pids) != len(ref_pids) or set(pids) != set(ref_pids)):
                extra = sorted(set(pids) - set(ref_pids))[:3]
                lacking = sorted(set(ref_pids) - set(pids))[:3]
                raise SMPDFormatError(path, f"lists other posts than {files[ref_key].name} ({len(pids)} vs "
                                            f"{len(ref_pids)} rows; Pids only here: {extra}, missing here: {lacking})",
                                      field="Pid")
            if not same_order:
                first = int(np.argmax(pids != ref_pids))
                report.notes.append(f"{path.name} lists the posts in another order (first at row {first}); "
                                    f"aligned on Pid to {files[ref_key].name}")
                report.add(f"{path.name} rows re-ordered", 1)
                order = pd.Index(pids).get_indexer(ref_index)
                records = [records[j] for j in order]
                uids = uids[order]
            known = uids != ""
            clash = known & (ref_uids != "") & (uids != ref_uids)
            if clash.any():
                i = int(np.argmax(clash))
                raise SMPDFormatError(path, f"Uid {uids[i]!r} disagrees with {ref_uids[i]!r} in "
                                            f"{files[ref_key].name} for Pid {ref_pids[i]}", row=i, field="Uid")
        for name in wanted:
            values, missing_field = _field(records, name)
            report.add(f"field {name} absent from {path.name} (set missing)", missing_field)
            if name == "Postdate":
                columns[name] = _postdates(values, path, report)
            elif name == "timezone_offset":
                columns[name] = _keep_plausible(_timezone_hours(values, path, report), path, name, report, values)
            elif name == "photo_firstdatetaken":
                columns[name] = _keep_plausible(_datetime_seconds(values, path, name, report), path, name, report,
                                                values)
            elif name == "Pathalias":
                text = _to_text(values)
                absent = (text == "") | (text == "None")
                report.add("Pathalias None", int(absent.sum()))
                columns[name] = np.where(absent, None, text)
            elif name in NUMERIC_FIELDS:
                columns[name] = _keep_plausible(to_float(values, path, name, report), path, name, report, values)
            else:
                columns[name] = _to_text(values)
    table = pd.DataFrame({"Pid": ref_pids, "Uid": ref_uids, **columns})
    for name in ("Pid", "Uid", "Pathalias", *TEXT_FIELDS):
        table[name] = table[name].astype("string") if name == "Pathalias" else table[name].astype(str)

    # geo: accuracy 0 or empty, or missing coordinates, mean no location
    no_geo = table["Latitude"].isna() | table["Longitude"].isna() | (table["Geoaccuracy"].fillna(0) == 0)
    table.loc[no_geo, ["Latitude", "Longitude"]] = np.nan
    report.add("no geo", int(no_geo.sum()))
    report.add("empty title", int((table["Title"] == "").sum()))
    report.add("empty tags", int((table["Alltags"] == "").sum()))

    paths = _read_lines(files["img_filepath"])
    if len(paths) != len(table):
        raise SMPDFormatError(files["img_filepath"], f"{len(paths)} image paths for {len(table)} posts: the "
                                                     "counts must match (one path a line, in post order)")
    listed = [p.strip() for p in paths]
    problems = [image_path_problem(p) for p in listed]
    unsafe = np.array([bool(problem) and bool(p) for p, problem in zip(listed, problems)])
    if unsafe.any():
        _note_gap(report, files["img_filepath"], "image path", unsafe, listed, "outside the data folder",
                  "not opened, no image")
    table["img_path"] = _image_paths(data_dir, files["img_filepath"], listed, problems)
    files_named = [data_image_path(data_dir, p) for p in table["img_path"]]
    table["img_exists"] = [f is not None and f.is_file() for f in files_named]
    report.add("image file missing", int((~table["img_exists"]).sum()))

    if split == "train":
        table["label"] = read_labels(files["label"], len(table))
    table.insert(0, "row", np.arange(len(table), dtype=np.int64))
    return table, report


def image_path_problem(listed: str) -> str:
    """Why a listed image path may not be opened ("" when it may): the one rule every opener follows.

    A path must stay inside the data folder as written: not absolute, no `..` that climbs
    out. It is checked lexically, not resolved, so a link the user placed inside the data
    folder (an images folder on another disk) is followed.
    """
    if not listed:
        return "no image path listed"
    if "\x00" in listed:
        return "image path contains a NUL byte"
    if posixpath.isabs(listed) or re.match(r"^[A-Za-z]:[\\/]|^\\\\", listed):
        return "absolute image path (outside the data folder; not opened)"
    if posixpath.normpath(listed).split("/")[0] == "..":
        return "image path climbs out of the data folder with '..' (not opened)"
    return ""


def data_image_path(data_dir: Path | str, listed: str) -> Path | None:
    """The file a listed image path names inside `data_dir`, or None when it may not be opened."""
    if not isinstance(listed, str) or image_path_problem(listed):
        return None
    return Path(data_dir) / posixpath.normpath(listed)


def _image_paths(data_dir: Path, listing: Path, paths: list[str], problems: list[str]) -> list[str]:
    """Paths relative to data_dir. Listed paths are relative to the data dir or to the listing's folder."""
    base = listing.parent
    if base != data_dir:
        sample = [p for p, problem in zip(paths[:200], problems[:200]) if not problem]
        here = sum((data_dir / p).is_file() for p in sample)
        there = sum((base / p).is_file() for p in sample)
        if there > here:
            prefix = base.relative_to(data_dir)
            return [str(prefix / p) if p and not problem else p for p, problem in zip(paths, problems)]
    return paths


def check_train_size(n_posts: int, n_folds: int, path: Path) -> None:
    """A train split too small for the validation folds is an error before any model work."""
    if n_posts < n_folds * MIN_POSTS_PER_FOLD:
        raise SMPDFormatError(path, f"{n_posts} train posts are too few for {n_folds} validation folds: expected "
                                    f"at least {n_folds * MIN_POSTS_PER_FOLD} ({MIN_POSTS_PER_FOLD} a fold), "
                                    "or a lower validation.n_folds")


def read_smpd(data_dir: Path | str, n_folds: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Both splits, checked against each other (Pids unique across splits); `n_folds`: the validation
    folds the train split must fill (MIN_POSTS_PER_FOLD posts each)."""
    data_dir = Path(data_dir)
    for split in SPLITS:  # every file present before any work
        split_files(data_dir, split)
    train, train_report = read_split(data_dir, "train")
    check_train_size(len(train), n_folds, split_files(data_dir, "train")["category"])
    test, test_report = read_split(data_dir, "test")
    both = set(train["Pid"]) & set(test["Pid"])
    if both:
        raise SMPDFormatError(data_dir, f"{len(both)} Pids appear in both train and test, e.g. {sorted(both)[:3]}",
                              field="Pid")
    report = {
        "train": {"rows": len(train), **train_report.counts, "notes": train_report.notes},
        "test": {"rows": len(test), **test_report.counts, "notes": test_report.notes},
        "test users unseen in train": int((~test["Uid"].isin(set(train["Uid"]))).sum()),
        "test subcategories unseen in train": sorted(set(test["Subcategory"]) - set(train["Subcategory"])),
    }
    return train, test, report
