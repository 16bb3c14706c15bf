"""benchmarks/analyse_prototype.py: the evidence figures on data whose answers are known."""
import json

import numpy as np
import pandas as pd

from benchmarks.analyse_prototype import analyse, gain_share, prototype_evidence


def known_blocks(n=600, seed=0):
    """emb carries the label; proto_pc0 is the subcategory's code, proto_pc1 a copy of an emb column,
    the network always names the post's own class."""
    rng = np.random.default_rng(seed)
    sub = rng.integers(0, 6, n)
    emb = rng.normal(size=(n, 8))
    emb[:, 0] += sub  # emb tells the subcategories apart too
    label = emb[:, 1] + 0.1 * rng.normal(size=n)
    pids = [f"p{i}" for i in range(n)]
    emb_frame = pd.DataFrame({"Pid": pids, **{f"emb_{j}": emb[:, j] for j in range(8)}})
    own = rng.uniform(0.3, 0.9, n)
    proto = pd.DataFrame({"Pid": pids, "proto_pc0": sub * 1.0, "proto_pc1": emb[:, 3],
                          "proto_p_sub": own, "proto_top1": own, "_pretext_loss": rng.uniform(size=n)})
    return proto, emb_frame, label, np.array([f"s{k}" for k in sub])


def test_evidence_finds_what_was_built_in():
    proto, emb, label, sub = known_blocks()
    out = prototype_evidence(proto, emb, label, sub)
    assert out["proto_columns"] == 4 and out["emb_columns"] == 8  # _pretext_loss is no feature
    assert out["label_ridge_r2"]["emb"] > 0.9 and out["label_ridge_r2"]["proto"] < 0.2
    assert abs(out["label_ridge_r2"]["emb+proto"] - out["label_ridge_r2"]["emb"]) < 0.02
    assert len(out["label_abs_spearman"]["proto_top"]) == 3 and out["label_abs_spearman"]["proto"]["max"] < 0.2
    assert out["label_subcategory_eta2"] < 0.05  # the label does not depend on the subcategory here
    assert out["subcategory_eta2"]["proto_pc"]["max"] > 0.999  # proto_pc0 is the subcategory
    assert out["proto_from_emb_r2"]["proto_pc"]["max"] > 0.99   # proto_pc1 is an emb column
    assert out["pretext"]["network_top1_accuracy"] == 1.0
    assert out["pretext"]["proto_pc_logistic_accuracy"] > out["pretext"]["emb_logistic_accuracy"] > 0.3
    assert out["pretext"]["majority_class"] < 0.3


def test_gain_share_counts_the_proto_columns():
    share = gain_share({"a": 6.0, "proto_pc0": 3.0, "proto_p_sub": 1.0, "b": 0.0}, n_features=4)
    assert share == {"gain_share": 0.4, "columns_listed": 4, "proto_columns_listed": 2, "best_rank": 2,
                     "complete": True}
    assert not gain_share({"a": 1.0}, n_features=10)["complete"]


def test_analyse_reads_a_work_folder(tmp_path):
    proto, emb, label, sub = known_blocks(200)
    folder = tmp_path / "config-abc"
    (folder / "features").mkdir(parents=True)
    (folder / "preds").mkdir()
    proto.to_parquet(folder / "features" / "proto_train.parquet")
    proto.assign(proto_pc0=proto["proto_pc0"] / 2).to_parquet(folder / "features" / "proto_test.parquet")
    emb.to_parquet(folder / "features" / "emb_train.parquet")
    pd.DataFrame({"Pid": proto["Pid"], "label": label, "Subcategory": sub}).to_parquet(tmp_path / "posts_train.parquet")
    gains = {"meta_x": 5.0, "emb_1": 4.0, "proto_pc0": 1.0}
    (folder / "preds" / "meta_emb_proto.json").write_text(json.dumps(
        {"score": {"src": 0.5, "mae": 1.0}, "n_features": 3, "feature_importance_gain": gains}))
    out = analyse(tmp_path)  # the data set folder: its config folder is found
    assert out["folder"] == str(folder)
    assert out["lightgbm"]["gain_share"] == 0.1 and out["lightgbm"]["complete"]
    assert out["member_scores"] == {"meta_emb_proto": {"src": 0.5, "mae": 1.0}}
    assert out["spread"]["test_over_train_std"]["median"] == 1.0
    assert out["spread"]["test_over_train_std"]["mean"] < 1.0  # proto_pc0 halved on test
