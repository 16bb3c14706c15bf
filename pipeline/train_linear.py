"""Stage `train_linear`: the members that are not trees, on the same folds as LightGBM: ridge
(ensemble.linear_members) and, when mlp.enabled, the MLP (mlp.feature_sets, models/mlp.py).

Each member writes work/preds/<member>.parquet and .json exactly like a LightGBM member (the one
loop of pipeline/members.py), so the blend treats every kind alike.
"""
from __future__ import annotations

from pipeline.members import member_inputs, member_outputs, members_of, train_members
from pipeline.stage import Stage

KINDS = ("ridge", "mlp")

STAGE = Stage(
    name="train_linear",
    run=lambda ctx: train_members(ctx, KINDS),
    inputs=lambda ctx: member_inputs(ctx, KINDS),
    outputs=lambda ctx: member_outputs(ctx, KINDS),
    # not gbdt (its parameters would rerun ridge): the blocks of the feature sets mlp.feature_sets
    # names are inputs, so a change of those blocks reruns the stage
    sections=("validation", "ensemble", "metadata", "prototype", "users", "mlp"),
    modules=("pipeline.members", "models.cv", "models.linear", "models.mlp", "features.target_stats",
             "features.blocks", "features.user_features"),
    enabled=lambda ctx: bool(members_of(ctx.config, KINDS)),
    description="ridge (and MLP) members on the same folds: out-of-fold and test predictions",
)
