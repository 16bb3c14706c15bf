"""The catalog: every file and folder the pipeline derives is named here, and only here.

Stages, notebooks and tools ask a RunContext for a path; nothing else builds one under the work,
shared or run folder. A folder that is one store with a format of its own (an encoder's cache
folder, a prototype network's folder) is named here; the module that owns the format names the
files inside it (features/encoders.py, models/train_prototype.py).

Work folders: configs of one data set live side by side and share what does not
depend on the config.

    work/<data set>/              shared_dir: the demo data, posts tables, encoder cache
                                  (features/encoders/<encoder>-<settings>/), trained prototype
                                  networks (prototype/<run key>/), stages.lock.json of the
                                  shared stages (make_demo, read_data)
    work/<data set>/config-<d>/   config_dir: everything that depends on the config (folds,
                                  feature blocks, tuning, predictions) and its own
                                  stages.lock.json; <d> = Config.work_digest()

A RunContext made by hand (tests, tools) without shared_dir keeps both in one folder.
    submissions/<run>/            run_dir: submission files, scores, report page and figures
    submissions/leaderboard.csv   one row per run

A RunContext made by hand (tests, tools) without shared_dir keeps both in one folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.io import file_digest
from pipeline.config import Config, ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The commit of the code at REPO_ROOT (`-dirty` with uncommitted changes): the leaderboard's `commit`."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class RunContext:
    """Everything a stage needs to find its inputs and outputs."""
    config: Config
    data_dir: Path
    config_dir: Path  # the config's folder, work/<data set>/config-<digest>
    run_name: str
    submissions_dir: Path = REPO_ROOT / "submissions"
    test_labels: Path | None = None
    is_demo: bool = False
    shared_dir: Path | None = None  # the data set's folder, shared by its configs (default: config_dir)
    # the data set's name in work/ and the leaderboard (run_all.py: the folder's name and a digest
    # of its files); default: the data folder's name
    dataset: str = ""
    force: bool = False  # --force: a stage rebuilds its outputs instead of reusing its caches

    def __post_init__(self):
        if self.shared_dir is None:
            self.shared_dir = self.config_dir
        if not self.dataset:
            self.dataset = Path(self.data_dir).name

    def data_files(self, split: str) -> list[Path]:
        """The official files of a split in the data folder (read, never written)."""
        from features.smpd import split_files
        return list(split_files(self.data_dir, split).values())

    # --- the data set's folder, shared by its configs ----------------------------------------
    def posts(self, split: str) -> Path:
        return self.shared_dir / f"posts_{split}.parquet"

    @property
    def read_report(self) -> Path:
        return self.shared_dir / "read_report.json"

    @property
    def encoder_cache(self) -> Path:
        """The encoders' cache: one folder per encoder and settings (features/encoders.py)."""
        return encoder_cache(self.shared_dir)

    def prototype_networks(self, run_key: str) -> Path:
        """The K out-of-fold networks of one prototype run key (fold_<k>/last.pt, outputs.npz)."""
        return self.shared_dir / "prototype" / run_key

    @property
    def study_storage(self) -> str:
        """tuning.storage, else one SQLite file per data set: configs whose objective is the same
        (same data, folds, search space, base parameters; see objective_digest) share its study."""
        return self.config.tuning.storage or f"sqlite:///{self.shared_dir / 'tuning' / 'study.db'}"

    @property
    def shared_lock_file(self) -> Path:
        """The lock of the stages every config of the data set shares (Stage.shared)."""
        return self.shared_dir / "stages.lock.json"

    # --- the config's folder ------------------------------------------------------------------
    @property
    def side_report(self) -> Path:
        """What the side tables gave (stage side_tables): per table its key, rows, gaps, matches."""
        return self.config_dir / "side_report.json"

    @property
    def lock_file(self) -> Path:
        """The lock of this config's stages."""
        return self.config_dir / "stages.lock.json"

    @property
    def config_record(self) -> Path:
        """Which config a config-<digest> folder holds (written by run_all.py)."""
        return self.config_dir / "config.yaml"

    @property
    def folds(self) -> Path:
        return self.config_dir / "folds.parquet"

    @property
    def folds_plan(self) -> Path:
        """What make_folds did: the scheme applied, and the shares of unseen users."""
        return self.config_dir / "folds.json"

    @property
    def features_dir(self) -> Path:
        return self.config_dir / "features"

    def feature_block(self, block: str, split: str) -> Path:
        """A feature block (`meta`, `emb`, `proto`, ...) for one split, keyed by Pid."""
        return self.features_dir / f"{block}_{split}.parquet"

    @property
    def prototype_summary(self) -> Path:
        """What the prototype stage built (its columns, or why it skipped the block)."""
        return self.config_dir / "prototype" / "summary.json"

    @property
    def adversarial_dir(self) -> Path:
        return self.config_dir / "adversarial"

    @property
    def adversarial_summary(self) -> Path:
        """The train-versus-test classifier: AUC, the features that shift most, the train posts most like test."""
        return self.adversarial_dir / "summary.json"

    @property
    def adversarial_posts(self) -> Path:
        """Each post's out-of-fold test-likeness (Pid, split, test_likeness) and each train post's weight."""
        return self.adversarial_dir / "posts.parquet"

    @property
    def tuning_dir(self) -> Path:
        return self.config_dir / "tuning"

    @property
    def best_params(self) -> Path:
        return self.tuning_dir / "best_params.json"

    @property
    def tuning_summary(self) -> Path:
        """Every trial of the study, for the run's history plot."""
        return self.tuning_dir / "study_summary.json"

    @property
    def preds_dir(self) -> Path:
        return self.config_dir / "preds"

    def member_preds(self, member: str) -> Path:
        """One member's out-of-fold and test predictions (Pid, split, fold, pred)."""
        return self.preds_dir / f"{member}.parquet"

    def member_summary(self, member: str) -> Path:
        """One member's scores, rounds and feature importance."""
        return self.preds_dir / f"{member}.json"

    @property
    def final_preds(self) -> Path:
        return self.preds_dir / "final.parquet"

    @property
    def final_summary(self) -> Path:
        """The blend's weights and scores."""
        return self.preds_dir / "final.json"

    @property
    def ablation_dir(self) -> Path:
        return self.config_dir / "ablation"

    # --- the run's folder -----------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.submissions_dir / self.run_name

    def run_file(self, name: str) -> Path:
        """A file of the run folder: submission.csv, submission.json, scores.json, config.yaml,
        report.html and the figures."""
        return self.run_dir / name

    @property
    def scores(self) -> Path:
        return run_scores(self.run_dir)

    @property
    def run_predictions(self) -> Path:
        return run_predictions(self.run_dir)

    @property
    def report_page(self) -> Path:
        return self.run_file("report.html")

    @property
    def leaderboard(self) -> Path:
        return leaderboard_file(self.submissions_dir)


# --- a run folder seen from outside a run (pipeline/blend_runs.py reads other runs' folders) ------
def run_scores(run_dir: Path) -> Path:
    """The run's scores, protocol, folds digest and data set (written by submit)."""
    return Path(run_dir) / "scores.json"


def run_predictions(run_dir: Path) -> Path:
    """Every post's final prediction with its fold, report flag and label (reporting/run_predictions.py)."""
    return Path(run_dir) / "predictions.parquet"


def leaderboard_file(submissions_dir: Path) -> Path:
    """The leaderboard of the runs under a submissions folder, one row per run."""
    return Path(submissions_dir) / "leaderboard.csv"


def blend_record(run_dir: Path) -> Path:
    """What a blend of runs blended (pipeline/blend_runs.py): the runs, their weights, the checks."""
    return Path(run_dir) / "blend_runs.json"


def encoder_cache(shared_dir: Path) -> Path:
    """The encoder cache of a data set's folder (also of another machine's, to merge its shards)."""
    return Path(shared_dir) / "features" / "encoders"


def demo_files(shared_dir: Path) -> tuple[Path, Path]:
    """Where the built-in demo data set is generated: its data folder and its hidden test labels."""
    return Path(shared_dir) / "data", Path(shared_dir) / "hidden_test_labels.txt"


def add_context_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that say which data, config and folders a run uses (make_context reads them)."""
    parser.add_argument("--data-dir", type=Path, help="SMPD directory in the official layout (default: the built-in demo)")
    parser.add_argument("--work-dir", type=Path, help="the data set's folder for derived data (default: "
                        "work/<data set name>); each config gets a config-<digest> folder inside it")
    parser.add_argument("--run-name", type=run_name_argument,
                        help="name of the run folder under submissions/: letters, digits, '-', '_', '.', not "
                             "starting with '.' (default: <data set>-<UTC time>)")
    parser.add_argument("--config", type=Path, help="YAML config (default: configs/demo.yaml or configs/smpd.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set gbdt.num_boost_round=200")
    parser.add_argument("--test-labels", type=Path, help="hidden test labels (one float a line) to score the run")
    parser.add_argument("--side-table", dest="side_tables", type=Path, action="append", default=[], metavar="FILE",
                        help="a table of your own (CSV or parquet) keyed by Pid, Uid or Pathalias, joined to every "
                             "member as block `side`; repeatable, added to the config's side_tables")
    parser.add_argument("--submissions-dir", type=Path, default=REPO_ROOT / "submissions")


# one folder name: no separator, no leading '.' (hidden, `..`), nothing a line-based tool would split
RUN_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}")


def run_name_argument(name: str) -> str:
    """--run-name: one folder name under submissions/ (argparse turns the error into one line)."""
    if not RUN_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a run name: one folder name of letters, digits, '-', '_' and '.', "
            "not starting with '.', at most 200 characters")
    return name


def check_run_folder(run_dir: Path, config: Config) -> None:
    """A run folder that another config wrote is never overwritten: the same config (a rerun, a
    resume) may reuse it, another one is an error that says how to choose another name."""
    record = run_dir / "config.yaml"
    if not record.is_file():
        return
    import yaml
    if record.read_text() != yaml.safe_dump(config.to_dict(), sort_keys=True):
        raise ConfigError(f"run folder {run_dir} holds a run of another config; choose another --run-name "
                          "(or leave it out for a timestamped one), or remove that folder to replace it")


def check_outside_data(data_dir: Path, folders: dict[str, Path]) -> None:
    """The data folder is only read: no output folder may be inside it."""
    for option, folder in folders.items():
        if folder == data_dir or data_dir in folder.parents:
            raise ConfigError(f"{option} {folder} is inside the data folder {data_dir}, which is never written "
                              "to; choose a folder outside it")


def data_set_name(data_dir: Path) -> str:
    """The data set's name in work/ and on the leaderboard: its folder's name and a digest of
    the names and contents of its official files (not the images), so two data sets in folders
    of the same name never share a work folder. A folder without the official files keeps its
    bare name (read_data then says what is missing)."""
    from features.smpd import SMPDFormatError, split_files
    try:
        files = sorted(path for split in ("train", "test") for path in split_files(data_dir, split).values())
    except SMPDFormatError:
        return data_dir.name
    sha = hashlib.sha256()
    cache: dict = {}
    for path in files:
        sha.update(f"{path.relative_to(data_dir).as_posix()}:{file_digest(path, cache)}\n".encode())
    return f"{data_dir.name}-{sha.hexdigest()[:8]}"


def with_side_tables(config: Config, extra: list[Path]) -> Config:
    """The config's side_tables plus --side-table's, as absolute paths (relative ones are from the current
    folder, as --data-dir's; a tuning worker, started elsewhere, reads the same files); one that is not a
    file is a one-line error at load. A file given twice (a worker's saved config and the run's
    --side-table again) is read once."""
    paths = list(dict.fromkeys(Path(p).expanduser().resolve() for p in [*config.side_tables, *extra]))
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"--side-table / side_tables: {path} is not a file; expected a CSV or parquet table")
    return dataclasses.replace(config, side_tables=[str(p) for p in paths]) if paths else config


def make_context(args: argparse.Namespace) -> RunContext:
    """The context of a run from run_all.py's arguments (add_context_arguments): its config, the data
    set's folder work/<data set>/ and the config's folder config-<digest>/ inside it, the run folder."""
    is_demo = args.data_dir is None
    default_config = REPO_ROOT / "configs" / ("demo.yaml" if is_demo else "smpd.yaml")
    config = load_config(args.config or default_config, args.overrides)
    config = with_side_tables(config, getattr(args, "side_tables", []))
    if is_demo:
        # the demo data are made from the demo section: another section is another data set
        dataset = f"demo-{config.digest('demo')[:8]}"
        shared_dir = args.work_dir or REPO_ROOT / "work" / dataset
        data_dir, demo_labels = demo_files(shared_dir)
        test_labels = args.test_labels or demo_labels
    else:
        data_dir = args.data_dir.resolve()
        if not data_dir.is_dir():
            raise ConfigError(f"--data-dir {data_dir} is not a directory")
        dataset = data_set_name(data_dir)
        shared_dir = args.work_dir or REPO_ROOT / "work" / dataset
        test_labels = args.test_labels
    if test_labels is not None and not is_demo and not Path(test_labels).is_file():
        raise ConfigError(f"--test-labels {test_labels} is not a file")
    # the default from the data folder's name, which may hold any character: the others become '_'
    run_name = args.run_name or re.sub(r"[^A-Za-z0-9_.\-]", "_", dataset).lstrip(".") + \
        f"-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    shared_dir = Path(shared_dir).resolve()
    submissions_dir = args.submissions_dir.resolve()
    if not is_demo:
        check_outside_data(data_dir, {"--work-dir": shared_dir, "--submissions-dir": submissions_dir})
    check_run_folder(submissions_dir / run_name, config)
    return RunContext(config=config, data_dir=data_dir, config_dir=shared_dir / f"config-{config.work_digest()}",
                      run_name=run_name, submissions_dir=submissions_dir,
                      test_labels=Path(test_labels).resolve() if test_labels else None, is_demo=is_demo,
                      shared_dir=shared_dir, dataset=dataset)


# --- a tuning worker's view of a config folder (before there is a RunContext) ------------------
def worker_config_path(config_dir: Path) -> Path:
    return Path(config_dir) / "tuning" / "config.yaml"

