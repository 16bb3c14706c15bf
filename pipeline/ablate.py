#!/usr/bin/env python
"""The ablation table of method.md, measured with the LightGBM member of the pipeline.

    python pipeline/run_all.py          # builds the work folder first (demo by default)
    python pipeline/ablate.py           # same --data-dir / --work-dir / --config / --set as run_all.py
    python pipeline/ablate.py --rows meta,meta_emb,attention

Each row adds one part to the row before it (the paper's order): metadata only;
+ raw embeddings (block `emb`); + the prototype network without prompts (flat, no
attention); + global prompts; + local prompts; + cross-modal attention; then flat
vs hierarchical prototypes, the 77% sample selection, the auxiliary regression head,
full class-probability columns, and the prototype block in place of the raw
embeddings. Every prototype variant trains its own K out-of-fold networks
(checkpoints and outputs under work/<ds>/ablation/<row>/, so an interrupted ablation
resumes; rows that differ only in how the block is used share them). LightGBM is
scored by `models.cv.cross_fit` on the shared folds, as the `train_trees` stage does.
The table goes to work/<ds>/ablation/ablation_<validation scheme>.md (and .json),
written atomically, and to stdout. `--score-only` rescores the blocks an earlier run
wrote, training nothing: e.g.

    python pipeline/run_all.py --stages make_folds --set validation.scheme=kfold
    python pipeline/ablate.py --score-only --set validation.scheme=kfold

(kfold and time_holdout share their inner folds `feature_fold` for one seed, so the
blocks stay out of fold; a block made under other inner folds is refused).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from common.io import read_json, read_parquet, write_json, write_parquet, write_text  # noqa: E402
from features.blocks import join_blocks  # noqa: E402
from models.cv import cross_fit  # noqa: E402
from models.metrics import score  # noqa: E402
from pipeline.catalog import RunContext  # noqa: E402

log = logging.getLogger("smp")

_OFF = dict(use_prompts_global=False, use_prompts_local=False, use_attention=False, hierarchical=False,
            aux_regression=False, sample_selection=1.0, prob_features="summary")
_FULL = dict(_OFF, use_prompts_global=True, use_prompts_local=True, use_attention=True)


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    label: str
    blocks: tuple[str, ...]
    proto: dict | None = None  # PrototypeConfig fields of this row (None: no prototype block)


ROWS = [
    Row("meta", "metadata only", ("meta",)),
    Row("meta_emb", "+ raw embeddings (PCA)", ("meta", "emb")),
    Row("proto_no_prompts", "+ prototype network, no prompts (flat, no attention)", ("meta", "emb", "proto"), _OFF),
    Row("global", "+ global prompts", ("meta", "emb", "proto"), dict(_OFF, use_prompts_global=True)),
    Row("local", "+ local prompts", ("meta", "emb", "proto"), dict(_OFF, use_prompts_global=True,
                                                                   use_prompts_local=True)),
    Row("attention", "+ cross-modal attention (flat prototypes)", ("meta", "emb", "proto"), _FULL),
    Row("hierarchical", "hierarchical prototypes (instead of flat)", ("meta", "emb", "proto"),
        dict(_FULL, hierarchical=True)),
    Row("hier_selection", "hierarchical + 77% sample selection", ("meta", "emb", "proto"),
        dict(_FULL, hierarchical=True, sample_selection=0.77)),
    Row("hier_aux", "hierarchical + auxiliary popularity head (ours)", ("meta", "emb", "proto"),
        dict(_FULL, hierarchical=True, aux_regression=True)),
    Row("hier_full_probs", "hierarchical, all 77 class probabilities as columns", ("meta", "emb", "proto"),
        dict(_FULL, hierarchical=True, prob_features="full")),
    Row("meta_proto", "metadata + hierarchical prototype block, no raw embeddings", ("meta", "proto"),
        dict(_FULL, hierarchical=True)),
]


def proto_variant(ctx: RunContext, row: Row, trained: dict) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The row's proto block and the seconds it took. Rows whose networks train alike (they
    differ only in how the block is used) share one folder, work/<ds>/ablation/<first such row>/."""
    from pipeline.prototype_block import build_proto_block, training_fields
    cfg = ctx.config.prototype.with_fields(**row.proto)
    folder = trained.setdefault(json.dumps(training_fields(cfg), sort_keys=True, default=str), row.name)
    out_dir = ctx.ablation_dir / folder
    started = time.perf_counter()
    train, test, _ = build_proto_block(ctx, cfg, out_dir / "prototype")
    seconds = time.perf_counter() - started
    write_parquet(out_dir / f"proto_{row.name}_train.parquet", train)
    write_parquet(out_dir / f"proto_{row.name}_test.parquet", test)
    write_json(out_dir / f"proto_{row.name}.json", {"feature_fold": _feature_fold_digest(ctx), "seconds": seconds})
    return train, test, seconds


def saved_variant(ctx: RunContext, row: Row) -> tuple[pd.DataFrame, pd.DataFrame, float | None]:
    """The row's proto block as an earlier ablation wrote it (--score-only); the block of a row
    with the same prototype settings will do (sample selection is applied when scoring)."""
    def settings(r: Row) -> dict:
        return {k: v for k, v in r.proto.items() if k != "sample_selection"}
    names = [row.name] + [r.name for r in ROWS if r.proto is not None and settings(r) == settings(row)]
    found = [p for name in names for p in sorted(ctx.ablation_dir.glob(f"*/proto_{name}_train.parquet"))]
    if not found:
        raise FileNotFoundError(f"no saved proto block for row {row.name!r} under {ctx.ablation_dir}: "
                                "run the ablation without --score-only first")
    train_path = found[0]
    name = train_path.name[len("proto_"):-len("_train.parquet")]
    info_path = train_path.parent / f"proto_{name}.json"
    info = read_json(info_path) if info_path.is_file() else {}
    if info.get("feature_fold") not in (None, _feature_fold_digest(ctx)):
        raise ValueError(f"{train_path} was made under other inner folds (feature_fold) than {ctx.folds}: its train "
                         "rows would not be out of fold; run the ablation without --score-only")
    if not info:
        log.warning("%s: no record of its inner folds; assuming they are those of %s", train_path, ctx.folds)
    test = read_parquet(train_path.parent / f"proto_{name}_test.parquet")
    return read_parquet(train_path), test, info.get("seconds")


def _feature_fold_digest(ctx: RunContext) -> str:
    from pipeline.prototype_block import feature_fold_digest
    return feature_fold_digest(read_parquet(ctx.folds, columns=["feature_fold"])["feature_fold"].to_numpy())


def score_row(ctx: RunContext, row: Row, proto: tuple[pd.DataFrame, pd.DataFrame] | None) -> dict:
    """Validation (and, when labels are at hand, test) scores of LightGBM on the row's blocks."""
    from pipeline.members import lightgbm_factory, load_member_data
    base_blocks = [b for b in row.blocks if b != "proto"]
    X, X_test, y, folds, stats, posts = load_member_data(ctx, base_blocks)
    fit_mask = None
    if proto is not None:
        pids = {s: posts[s]["Pid"].astype(str).to_numpy() for s in ("train", "test")}
        X = pd.concat([X, join_blocks({"proto": proto[0]}, pids["train"])], axis=1)
        X_test = pd.concat([X_test, join_blocks({"proto": proto[1]}, pids["test"])], axis=1)
        keep = row.proto["sample_selection"]
        if keep < 1.0:  # the paper's trick, as train_trees applies it: fit on the lowest pretext losses
            loss = proto[0]["_pretext_loss"].to_numpy()
            fit_mask = loss <= np.nanquantile(loss, keep)
    result = cross_fit(lightgbm_factory(ctx.config), X, y, folds, X_test, seeds=ctx.config.gbdt.seeds,
                       target_stats=stats, fit_mask=fit_mask, progress=False, name=row.name)
    scores = {"row": row.name, "label": row.label, "n_features": X.shape[1],
              **{f"val_{k}": v for k, v in result.score.items()}}
    if ctx.test_labels is not None and Path(ctx.test_labels).is_file():
        from features.smpd import read_labels
        labels = read_labels(ctx.test_labels, len(X_test))
        scores.update({f"test_{k}": v for k, v in score(labels, result.test).items()})
    return scores


def markdown(results: list[dict]) -> str:
    has_test = any("test_src" in r for r in results)
    head = ["row", "features", "val SRC", "val MAE", "val MSE"] + (["test SRC", "test MAE"] if has_test else []) \
        + ["proto stage s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["label"], str(r["n_features"]), f"{r['val_src']:.4f}", f"{r['val_mae']:.4f}", f"{r['val_mse']:.4f}"]
        if has_test:
            cells += [f"{r['test_src']:.4f}", f"{r['test_mae']:.4f}"] if "test_src" in r else ["", ""]
        cells.append(f"{r['proto_seconds']:.0f}" if r.get("proto_seconds") is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pipeline.catalog import add_context_arguments, make_context
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("--rows", help=f"comma-separated rows (default: all): {','.join(r.name for r in ROWS)}")
    parser.add_argument("--out", type=Path, help="markdown file (default: work/<ds>/ablation/ablation_<scheme>.md)")
    parser.add_argument("--score-only", action="store_true",
                        help="train nothing: score the proto blocks an earlier ablation wrote (e.g. under another "
                             "validation scheme that keeps the inner folds, or other LightGBM settings)")
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        print("\nOther options as for pipeline/run_all.py (--data-dir, --work-dir, --config, --set).")
        return 0
    context_parser = argparse.ArgumentParser(prog="pipeline/ablate.py")
    add_context_arguments(context_parser)
    ctx = make_context(context_parser.parse_args(rest))
    rows = ROWS
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(wanted) - {r.name for r in ROWS})
        if unknown:
            print(f"error: unknown row(s) {unknown}; known: {[r.name for r in ROWS]}", file=sys.stderr)
            return 2
        rows = [r for r in ROWS if r.name in wanted]
    needed = [ctx.posts("train"), ctx.posts("test"), ctx.folds] + [
        ctx.feature_block(b, s) for b in sorted({b for r in rows for b in r.blocks if b != "proto"})
        for s in ("train", "test")]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        print(f"error: {missing[0]} is missing: build the work folder first (python pipeline/run_all.py, "
              "with encoders.enabled for the emb block)", file=sys.stderr)
        return 1
    results, trained = [], {}
    for row in rows:
        proto, seconds = None, None
        if row.proto is not None:
            if args.score_only:
                train, test, seconds = saved_variant(ctx, row)
            else:
                train, test, seconds = proto_variant(ctx, row, trained)
            proto = (train, test)
        result = score_row(ctx, row, proto)
        result["proto_seconds"] = seconds
        result["proto"] = row.proto
        results.append(result)
        log.info("ablation %s: val SRC %.4f MAE %.4f MSE %.4f", row.name, result["val_src"], result["val_mae"],
                 result["val_mse"])
    table = markdown(results)
    out = args.out or ctx.ablation_dir / f"ablation_{ctx.config.validation.scheme}.md"
    write_text(out, table)
    write_json(out.with_suffix(".json"), {"scheme": ctx.config.validation.scheme, "rows": results})
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
