"""Stage `train_linear`: ridge members (ensemble.linear_members) on the same folds as LightGBM.

Each member writes work/preds/<member>.parquet and .json exactly like a LightGBM member (the one
loop of pipeline/members.py), so the blend treats both kinds alike.
"""
from __future__ import annotations

from pipeline.members import member_inputs, member_outputs, members_of, train_members
from pipeline.stage import Stage

KINDS = ("ridge",)

STAGE = Stage(
    name="train_linear",
    run=lambda ctx: train_members(ctx, KINDS),
    inputs=lambda ctx: member_inputs(ctx, KINDS),
    outputs=lambda ctx: member_outputs(ctx, KINDS),
    sections=("validation", "ensemble", "metadata", "prototype", "users"),
    modules=("pipeline.members", "models.cv", "models.linear", "features.target_stats", "features.blocks",
             "features.user_features"),
    enabled=lambda ctx: bool(members_of(ctx.config, KINDS)),
    description="ridge members on the same folds: out-of-fold and test predictions",
)
