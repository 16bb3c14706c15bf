"""A run's cost before it runs: each stage's seconds and peak memory, from what drives the stage
(posts, encoder passes, prototype steps, tuning trials, tree fits) and per-unit costs measured on
this machine.

Where the per-unit costs come from, best first:
  1. earlier runs, on any data set: when a stage finishes, run_all.py appends its wall and CPU
     seconds, resident memory at its start and peak, and its units to the timings file
     (`timings_file()`: $SMP_CACHE_DIR, else $XDG_CACHE_HOME/smp-pipeline, else
     ~/.cache/smp-pipeline; `timings.jsonl`). Records of the same stage and the same
     cost settings (`COST_SETTINGS`: what changes a unit's cost, not the data's size) are fitted
     as seconds = fixed + per-unit x units (one size: proportional);
  2. otherwise a calibration of a few seconds: probes (`PROBES`: the configured text and image
     encoders on 16 texts and 8 images, a few LightGBM rounds on a frame of the right width, a
     pandas/numpy workload), their CPU seconds on one thread now on the stage's device, against the
     same probes timed when the reference records in pipeline/plan_reference.json were measured;
     the reference's fit is scaled by that ratio of machine speed. The load is not in the ratio:
     a calibrated wall estimate keeps the reference runs' stretch of wall over CPU seconds (they ran
     at load 14 to 16 on 2 cores: about 4x), the CPU estimate does not depend on it.
The memory estimate is the fitted record's resident memory at the stage's start plus its growth
during the stage scaled by the units. Estimates are of a stage that does all its work: shared
caches (encoder arrays, prototype networks, a tuning study) make a rerun faster.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from common.locks import FileLock
from pipeline.catalog import RunContext
from pipeline.stage import Stage

log = logging.getLogger("smp")

REFERENCE = Path(__file__).with_name("plan_reference.json")
RECORDS_PER_FIT = 8  # the latest records of a stage and cost settings that are fitted
HOUR = 3600.0


# --- the data set's size -----------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    train: int
    test: int

    @property
    def posts(self) -> int:
        return self.train + self.test


def table_rows(path: Path) -> int:
    import pyarrow.parquet as pq
    return pq.read_metadata(path).num_rows


def _list_lines(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if line.strip())


def data_set_size(ctx: RunContext) -> Size | None:
    """Train and test posts: the posts tables (read_data has run), else the demo's configured size,
    else the lines of the official image lists (one per post); None when none of them is there."""
    tables = [ctx.posts(split) for split in ("train", "test")]
    if all(t.is_file() for t in tables):
        return Size(*(table_rows(t) for t in tables))
    if ctx.is_demo:
        return Size(ctx.config.demo.n_train, ctx.config.demo.n_test)
    from features.smpd import SMPDFormatError, split_files
    try:
        return Size(*(_list_lines(split_files(ctx.data_dir, split)["img_filepath"]) for split in ("train", "test")))
    except (SMPDFormatError, OSError):
        return None


# --- what drives each stage --------------------------------------------------------------------
def prototype_steps(cfg, train: int) -> int:
    """Training steps of the prototype stage: one network per inner fold, each on the other folds' posts."""
    k = max(2, cfg.validation.n_folds)
    per_network = math.ceil(train * (k - 1) / k / max(1, cfg.prototype.train.batch_size))
    return k * cfg.prototype.train.epochs * per_network


def holdout(cfg, train: int) -> bool:
    """Whether make_folds will apply a time holdout (one fit a model), not k-fold cross-fitting (k fits):
    models.validation.fold_plan replaces a holdout too small for the data set's size."""
    from models.validation import fold_plan
    v = cfg.validation
    return fold_plan(train, v.scheme, v.n_folds, v.holdout_frac, v.min_holdout_posts).scheme == "time_holdout"


def tuning_trials(cfg, train: int) -> int:
    from models.sizing import tuning_trials as capped
    t, v = cfg.tuning, cfg.validation
    validated = train * v.holdout_frac if holdout(cfg, train) else train  # k-fold validates every train post
    return capped(t.n_trials, int(validated)) if t.adapt_to_size else t.n_trials


def tree_fits(cfg, train: int) -> int:
    """LightGBM and CatBoost fits of train_trees, up to the rounds each takes: members x seeds x (fit, refit),
    a k-fold scheme one fit per fold and a refit."""
    from pipeline.members import members_of
    fits_per_seed = 2 if holdout(cfg, train) else cfg.validation.n_folds + 1
    trees = members_of(cfg, ("lightgbm", "catboost"))
    seeds = {"lightgbm": len(cfg.gbdt.seeds or [0]), "catboost": len(cfg.catboost.seeds or [0])}
    return sum(seeds[kind] for kind, _ in trees.values()) * fits_per_seed


def stage_units(name: str, cfg, size: Size) -> tuple[float, str]:
    """The stage's work in units whose cost does not depend on the data set's size, and their name."""
    if name == "prototype":
        return float(prototype_steps(cfg, size.train)), "steps"
    if name == "tune":  # a trial fits once on a holdout, once a fold when k-fold
        folds = 1 if holdout(cfg, size.train) else cfg.validation.n_folds
        return float(tuning_trials(cfg, size.train) * folds * size.train), "fit-posts"
    if name == "train_trees":
        return float(tree_fits(cfg, size.train) * size.train), "fit-posts"
    if name == "train_linear":
        from pipeline.members import members_of
        return float(max(1, len(members_of(cfg, ("ridge",)))) * size.posts), "member-posts"
    return float(size.posts), "posts"


# settings (dotted config keys) that change a unit's cost: records with other values are not fitted
# together (the data set's size and the counts that stage_units reads are not among them)
COST_SETTINGS = {
    "make_demo": ["demo.image_size", "demo.n_users"],
    "encode": ["encoders.image", "encoders.text", "encoders.clip_model", "encoders.image_resolution",
               "encoders.max_text_tokens", "encoders.max_text_length", "encoders.precision", "encoders.decoder",
               "encoders.batch_size", "encoders.num_workers"],
    "embed_features": ["encoders.image", "encoders.text", "encoders.pca_dim"],
    "user_features": ["users", "encoders.text"],
    "prototype": ["prototype.model", "prototype.train.batch_size", "prototype.loss", "prototype.stack",
                  "prototype.out_dim", "encoders.text", "encoders.image", "encoders.max_text_tokens"],
    "tune": ["gbdt.params", "gbdt.num_threads", "gbdt.num_boost_round", "gbdt.early_stopping_rounds",
             "tuning.feature_set", "tuning.pruning", "tuning.workers", "tuning.per_member", "gbdt.feature_sets",
             "encoders.enabled", "prototype.enabled", "users"],
    "train_trees": ["gbdt.params", "gbdt.num_threads", "gbdt.num_boost_round", "gbdt.early_stopping_rounds",
                    "gbdt.feature_sets", "gbdt.pseudo_label", "catboost", "tuning.enabled", "encoders.enabled",
                    "prototype.enabled", "users"],
    "train_linear": ["ensemble", "gbdt.feature_sets", "encoders.enabled", "prototype.enabled"],
    "adversarial": ["validation.adversarial_blocks", "gbdt.num_threads", "encoders.enabled", "prototype.enabled",
                    "users"],
}
# stages that run on a configured torch device, and its setting
DEVICE_SETTINGS = {"encode": "encoders.device", "user_features": "encoders.device",
                   "prototype": "prototype.train.device"}


def _setting(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def cost_key(name: str, cfg, device: str) -> str:
    values = cfg.to_dict()
    parts = {key: _setting(values, key) for key in COST_SETTINGS.get(name, [])}
    parts["device"] = device
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_devices(cfg) -> dict[str, str]:
    """The device type of each torch stage ('cpu' or 'cuda'); a `cuda` setting without CUDA raises
    common.devices.DeviceError, before any work. torch is imported only when a torch stage is on."""
    wanted = {name: _setting(cfg.to_dict(), setting) for name, setting in DEVICE_SETTINGS.items()}
    on = {"encode": cfg.encoders.enabled, "user_features": cfg.encoders.enabled and cfg.users.text_dims > 0,
          "prototype": cfg.encoders.enabled and cfg.prototype.enabled}
    if not any(on.values()):
        return {}
    from common.devices import resolve_device
    return {name: resolve_device(wanted[name], DEVICE_SETTINGS[name]).type for name in wanted if on[name]}


# --- the timings file: one JSON line per finished stage ----------------------------------------
def timings_file() -> Path:
    root = os.environ.get("SMP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "smp-pipeline"
    return Path(root) / "timings.jsonl"


def read_records(path: Path) -> list[dict]:
    """The records of a timings file; lines that are not a record (a torn write) are skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and {"stage", "key", "units", "wall_s"} <= rec.keys():
            out.append(rec)
    return out


def stage_record(ctx: RunContext, stage: Stage, meter, devices: dict[str, str]) -> dict | None:
    """What a finished stage cost, with its units and cost settings; None when the size is unknown."""
    size = data_set_size(ctx)
    if size is None:
        return None
    units, unit = stage_units(stage.name, ctx.config, size)
    device = devices.get(stage.name, "cpu")
    return {"stage": stage.name, "key": cost_key(stage.name, ctx.config, device), "device": device,
            "units": units, "unit": unit, "posts": size.posts, "dataset": ctx.dataset,
            "wall_s": round(meter.wall_s, 3), "cpu_s": round(meter.cpu_s, 3),
            "rss_start_mb": round(meter.rss_start_mb or 0.0, 1), "peak_rss_mb": round(meter.peak_rss_mb or 0.0, 1),
            "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def append_record(record: dict, path: Path | None = None) -> None:
    """One line appended under an flock (runs on other data sets append to the same file); a file that
    cannot be written costs the plan its history, never the run: one warning."""
    path = path or timings_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(path.name + ".lock")), open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError as err:
        log.warning("cannot record the stage's timing in %s (%s); later plans will not know it", path, err)


# --- fitting -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    fixed_s: float
    per_unit_s: float
    cpu_fixed_s: float
    cpu_per_unit_s: float
    rss_start_mb: float
    growth_mb_per_unit: float
    growth_fixed_mb: float
    n: int
    spread: bool  # records of more than one size: fixed and per-unit parts told apart
    units: float  # the latest record's

    def seconds(self, units: float) -> float:
        return self.fixed_s + self.per_unit_s * units

    def cpu_seconds(self, units: float) -> float:
        return self.cpu_fixed_s + self.cpu_per_unit_s * units

    def peak_mb(self, units: float) -> float:
        return self.rss_start_mb + self.growth_fixed_mb + self.growth_mb_per_unit * units


def _spread(xs: list[float]) -> bool:
    return len(xs) >= 2 and max(xs) > 1.2 * min(xs)


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """fixed + slope x through the points, both non-negative; one size (or no spread): through zero."""
    if _spread(xs):
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        slope = max(slope, 0.0)
        fixed = my - slope * mx
        if fixed >= 0:
            return fixed, slope
    ratio = sorted(y / x for x, y in zip(xs, ys) if x > 0)
    return 0.0, (ratio[len(ratio) // 2] if ratio else 0.0)


def fit_records(records: list[dict]) -> Fit | None:
    records = [r for r in records if r.get("units", 0) > 0][-RECORDS_PER_FIT:]
    if not records:
        return None
    units = [float(r["units"]) for r in records]
    fixed, slope = _line(units, [float(r["wall_s"]) for r in records])
    cpu_fixed, cpu_slope = _line(units, [float(r.get("cpu_s", r["wall_s"])) for r in records])
    growth = [max(0.0, float(r.get("peak_rss_mb", 0)) - float(r.get("rss_start_mb", 0))) for r in records]
    g_fixed, g_slope = _line(units, growth)
    return Fit(fixed, slope, cpu_fixed, cpu_slope, float(records[-1].get("rss_start_mb", 0.0)), g_slope, g_fixed, len(records),
               _spread(units), units[-1])


# --- the calibration ---------------------------------------------------------------------------
def _best_of(fn, repeats: int) -> float:
    """The fewest CPU seconds of a few calls, each on one thread: what the machine's speed sets and the
    load of a shared machine does not (wall seconds of the same 50 ms probe, minutes apart at load 15 on
    2 cores, differed 1.5x to 4x; threads waiting for each other make it worse)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = math.inf
        for _ in range(repeats):
            started = time.process_time()
            fn()
            best = min(best, time.process_time() - started)
        return best
    finally:
        torch.set_num_threads(threads)


def probe_cpu(cfg) -> float:
    """A pandas/numpy workload like the light stages' (grouping, joining, sorting; no BLAS: one thread)."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"u": rng.integers(0, 2000, 100_000), "x": rng.random(100_000)})

    def work():
        stats = frame.groupby("u")["x"].agg(["mean", "count"])
        frame.join(stats, on="u").sort_values("x")
    return _best_of(work, 5)


def probe_lgbm(cfg) -> float:
    """10 LightGBM rounds on 1,000 rows as wide as the widest member might be, on one thread."""
    import lightgbm as lgb
    import numpy as np
    width = 60 + (100 if cfg.encoders.enabled else 0) + (40 if cfg.prototype.enabled else 0)
    rng = np.random.default_rng(0)
    X = rng.random((1000, width))
    y = X[:, 0] + rng.normal(0, 0.1, 1000)
    params = {"objective": "regression", "verbose": -1, "num_threads": 1, "seed": 0,
              "num_leaves": 31, "deterministic": True}
    return _best_of(lambda: lgb.train(params, lgb.Dataset(X, y), num_boost_round=10), 3)


_LOADED: dict = {}  # (encoder settings, device) -> (text, image): the two probes load them once


def _encoders(cfg, device: str):
    key = (json.dumps(dataclasses.asdict(cfg.encoders), sort_keys=True), device)
    if key not in _LOADED:
        from features.encoders_clip import CLIP, load_clip_model
        from features.encoders_image import load_image_encoder
        from features.encoders_text import load_text_encoder
        enc = cfg.encoders
        clip = load_clip_model(enc.clip_model) if CLIP in (enc.image, enc.text) else None
        _LOADED[key] = (load_text_encoder(enc, device, clip), load_image_encoder(enc, device, clip))
    return _LOADED[key]


def probe_text(cfg, device: str = "cpu") -> float:
    """The configured text encoder on 16 short texts (its load not counted)."""
    text, _ = _encoders(cfg, device)
    texts = [f"sunset over the harbour {i} #travel #photo{i % 5} city lights" for i in range(16)]
    text.sentences(texts[:2])
    return _best_of(lambda: text.sentences(texts), 5)


def probe_image(cfg, device: str = "cpu") -> float:
    """The configured image encoder on 8 crops at its input size (its load not counted)."""
    import torch
    _, image = _encoders(cfg, device)
    crops = torch.randint(0, 255, (8, 3, image.prep.crop, image.prep.crop), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    image.embed(crops[:2])
    return _best_of(lambda: image.embed(crops), 5)


PROBE_FUNCTIONS = {"cpu": probe_cpu, "lgbm": probe_lgbm, "text": probe_text, "image": probe_image}
# the probes whose ratio (now / reference) scales each stage's reference cost; default `cpu`
PROBES = {"encode": ("text", "image"), "user_features": ("text",), "prototype": ("text",),
          "tune": ("lgbm",), "train_trees": ("lgbm",), "adversarial": ("lgbm",)}


def run_probes(cfg, devices: dict[str, str], names: set[str]) -> dict[str, float]:
    """The probes' seconds; one that fails (a model not available offline) is left out, and the stages it
    would scale fall back to the `cpu` probe. The encoders are loaded once for both of theirs."""
    out = {}
    device = devices.get("encode") or devices.get("prototype") or "cpu"
    for name in sorted(names):
        try:
            fn = PROBE_FUNCTIONS[name]
            out[name] = fn(cfg, device) if name in ("text", "image") else fn(cfg)
        except Exception as err:  # noqa: BLE001 - a probe is an estimate's input, never a run's failure
            log.info("plan: probe %s failed (%s); its stages are scaled by the cpu probe", name, err)
    return out


def load_reference(path: Path = REFERENCE) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"probes": {}, "records": []}
    return data if isinstance(data, dict) else {"probes": {}, "records": []}


def write_reference(records: list[dict], probes: dict[str, float], about: str, path: Path = REFERENCE) -> None:
    from common.io import write_json
    write_json(path, {"about": about, "probes": probes, "records": records})


# --- the estimate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    seconds: float  # wall
    cpu_seconds: float  # user + system, the run's process and its children: what load does not stretch
    peak_mb: float | None
    units: float
    unit: str
    source: str  # e.g. `2 earlier runs`, `calibration x1.3`
    device: str

    def over_an_hour_on_cpu(self) -> bool:
        return self.device == "cpu" and self.seconds > HOUR


# what shortens a stage (run_all --plan names it for a CPU stage over an hour)
SHORTER = {
    "encode": lambda cfg: ("encoders.image=efficientnet-lite0" if cfg.encoders.image != "efficientnet-lite0" else
                           "encoders.image_resolution=128 (or a CUDA GPU: encoders.device=cuda)"),
    "prototype": lambda cfg: "prototype.train.epochs (or a larger prototype.train.batch_size, or prototype.enabled=false)",
    "tune": lambda cfg: "tuning.n_trials",
    "train_trees": lambda cfg: "gbdt.seeds (fewer) or gbdt.num_boost_round",
    "user_features": lambda cfg: "users.text_dims=0",
    "make_demo": lambda cfg: "demo.n_train / demo.n_test",
}


class Estimator:
    """Stage estimates for one run: per-unit costs from the timings file, else (calibrate=True) from the
    reference scaled by probes timed now. The plan a run logs before its first stage passes
    calibrate=False: a run pays for no probe."""

    def __init__(self, ctx: RunContext, calibrate: bool = True, records: list[dict] | None = None):
        self.ctx = ctx
        self.size = data_set_size(ctx)
        self.posts = self.size.posts if self.size else None
        self.devices = stage_devices(ctx.config)
        self.records = read_records(timings_file()) if records is None else records
        self.calibrate = calibrate
        self.reference = load_reference()
        self.probes: dict[str, float] | None = None
        self.probe_seconds = 0.0

    def _own(self, name: str, key: str) -> list[dict]:
        return [r for r in self.records if r["stage"] == name and r["key"] == key]

    def _ratio(self, name: str) -> float | None:
        """Now / reference of the stage's probes (their seconds summed); None without a usable probe."""
        if self.probes is None:
            names = {p for stage in PROBES.values() for p in stage} | {"cpu"}
            if not self.ctx.config.encoders.enabled:
                names -= {"text", "image"}
            started = time.perf_counter()
            self.probes = run_probes(self.ctx.config, self.devices, names)
            self.probe_seconds = time.perf_counter() - started
        ref = self.reference.get("probes", {})
        for probes in (PROBES.get(name, ("cpu",)), ("cpu",)):
            if all(p in self.probes and ref.get(p) for p in probes):
                return sum(self.probes[p] for p in probes) / sum(ref[p] for p in probes)
        return None

    def stage(self, stage: Stage) -> Estimate | None:
        if self.size is None:
            return None
        cfg = self.ctx.config
        units, unit = stage_units(stage.name, cfg, self.size)
        device = self.devices.get(stage.name, "cpu")
        own_records = self._own(stage.name, cost_key(stage.name, cfg, device))
        own = fit_records(own_records)
        ref = fit_records([r for r in self.reference.get("records", []) if r["stage"] == stage.name])
        if own is not None:
            about = f"{own.n} earlier run(s) on {len({r['dataset'] for r in own_records})} data set(s)"
            seconds, cpu = own.seconds(units), own.cpu_seconds(units)
            if not own.spread and ref is not None and ref.spread and ref.seconds(own.units) > 0:
                # one size timed here: the reference's split of fixed and per-unit cost, at this machine's level
                seconds = ref.seconds(units) * own.seconds(own.units) / ref.seconds(own.units)
                cpu = ref.cpu_seconds(units) * own.cpu_seconds(own.units) / max(ref.cpu_seconds(own.units), 1e-9)
                about += ", scaled as the reference"
            return Estimate(seconds, cpu, own.peak_mb(units), units, unit, about, device)
        if not self.calibrate:
            return None
        ratio = self._ratio(stage.name) if ref is not None else None
        if ref is None or ratio is None:
            return None
        return Estimate(ref.seconds(units) * ratio, ref.cpu_seconds(units) * ratio, ref.peak_mb(units), units, unit,
                        f"calibration x{ratio:.2g}", device)


def as_dict(estimate: Estimate) -> dict:
    return dataclasses.asdict(estimate)
