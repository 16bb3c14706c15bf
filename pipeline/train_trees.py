"""Stage `train_trees`: the gradient-boosted members (LightGBM per gbdt.feature_sets, CatBoost per
catboost.feature_sets), out-of-fold and test predictions.

Each member writes work/preds/<member>.parquet (Pid, split, fold, pred) and a summary (scores,
rounds, importance) beside it; the members and the loop are pipeline/members.py.
"""
from __future__ import annotations

from pipeline.members import member_inputs, member_outputs, train_members
from pipeline.stage import Stage

KINDS = ("catboost", "lightgbm")

STAGE = Stage(
    name="train_trees",
    run=lambda ctx: train_members(ctx, KINDS),
    inputs=lambda ctx: member_inputs(ctx, KINDS),
    outputs=lambda ctx: member_outputs(ctx, KINDS),
    sections=("validation", "gbdt", "metadata", "tuning", "prototype", "users", "catboost"),
    modules=("pipeline.members", "models.cv", "models.gbdt", "models.pseudo_label", "models.sizing",
             "models.catboost_member", "features.target_stats", "features.blocks", "features.user_features"),
    description="LightGBM and CatBoost per feature set: out-of-fold and test predictions",
)
