#!/usr/bin/env python
"""Stage `make_demo`: write the synthetic SMPD-format demo data set (features/demo.py).

In a pipeline run it is on only for the built-in demo (no --data-dir); it writes the
official file layout into ctx.data_dir and the test labels to ctx.test_labels, outside it.
Standalone:

    python pipeline/make_demo.py --out-dir /tmp/smpd_demo --labels /tmp/smpd_demo_test_labels.txt
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

from features.demo import SPLITS, make_demo, split_file_names  # noqa: E402
from pipeline.config import DemoConfig  # noqa: E402
from pipeline.catalog import RunContext
from pipeline.stage import Stage  # noqa: E402

log = logging.getLogger("smp")


def outputs(ctx: RunContext) -> list[Path]:
    # the images are not listed (thousands of files); the lists and tables that name them are
    files = [ctx.data_dir / name for split in SPLITS for name in split_file_names(split)]
    return files + ([ctx.test_labels] if ctx.test_labels is not None else [])


def run(ctx: RunContext) -> None:
    if ctx.test_labels is None:
        raise ValueError("make_demo needs ctx.test_labels: the file that receives the hidden test labels")
    cfg = ctx.config.demo
    summary = make_demo(ctx.data_dir, ctx.test_labels, n_train=cfg.n_train, n_test=cfg.n_test,
                        n_users=cfg.n_users, image_size=cfg.image_size, seed=cfg.seed)
    log.info("[make_demo] %s", json.dumps(summary))


STAGE = Stage(
    name="make_demo",
    run=run,
    inputs=lambda ctx: [],
    outputs=outputs,
    sections=("demo",),
    modules=("features.demo",),
    enabled=lambda ctx: ctx.is_demo,
    shared=True,
    description="generate the synthetic SMPD-format demo data",
)


def main(argv: list[str] | None = None) -> int:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True, help="data folder to write (official SMPD layout)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="file for the hidden test labels (one float a line); must lie outside --out-dir")
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-test", type=int, default=defaults.n_test)
    parser.add_argument("--n-users", type=int, default=defaults.n_users)
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="longest image side, pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--side-table", type=Path, default=None,
                        help="also write a per-user side table (CSV: Uid, followers, following, account_age_days) "
                             "drawn from the demo's latent user popularity, for run_all.py --side-table")
    args = parser.parse_args(argv)
    try:
        summary = make_demo(args.out_dir, args.labels, n_train=args.n_train, n_test=args.n_test,
                            n_users=args.n_users, image_size=args.image_size, seed=args.seed,
                            side_table=args.side_table)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
