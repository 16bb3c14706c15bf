"""The degenerate-data matrix: the whole pipeline, every stage on (the demo config's offline encoders,
the prototype network, tuning, both member kinds, blend, submit, plots, report), on data sets that
lack a modality or a class, meet only new users, or are tiny. Each run must end with a valid
submission, and a block the data leave empty must be skipped and named in the log and the report.

Budgets are minimal (--set), the runs in-process (one import of torch and LightGBM for the matrix).
`python -m pytest -q tests/test_degenerate.py --durations=0` shows what each case costs.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.run_all import main
from reporting.submission_format import check_submission
from tests.tiny_demo import DEGENERATE, degenerate_data, load_records

ROOT = Path(__file__).resolve().parent.parent
SMALL_BUDGETS = [f"--set={item}" for item in (
    "validation.n_folds=2", "encoders.num_workers=0", "encoders.batch_size=128", "encoders.image_resolution=64",
    "prototype.train.epochs=1", "prototype.model.width=64", "tuning.n_trials=2", "tuning.startup_trials=1",
    "tuning.prune_warmup_rounds=10", "gbdt.num_boost_round=40", "gbdt.early_stopping_rounds=10", "gbdt.seeds=[0]")]

# the parts each variant leaves without information: (block, part) as the report names them
EMPTY = {
    "no_images": ["Feature block emb, part img,", "Feature block imgstats is empty"],
    "no_text": ["Feature block emb, part title,", "Feature block emb, part tags,"],
    "one_category": ["Feature block proto is empty"],
}


# The prompt learners run the text backbone at every step (most of the matrix's time): kept on (the
# demo config's default) where a modality is absent and the network still trains, off elsewhere.
PROMPTS_ON = {"no_images", "no_text"}
PROMPTS_OFF = ["--set=prototype.model.use_prompts_global=false", "--set=prototype.model.use_prompts_local=false"]


def run_pipeline(root: Path, data: Path, variant: str) -> int:
    return main(["--data-dir", str(data), "--config", str(ROOT / "configs" / "demo.yaml"),
                 "--test-labels", str(root / "test_labels.txt"), "--work-dir", str(root / "work"),
                 "--submissions-dir", str(root / "subs"), "--run-name", "run", *SMALL_BUDGETS,
                 *([] if variant in PROMPTS_ON else PROMPTS_OFF)])


@pytest.mark.parametrize("variant", list(DEGENERATE))
def test_every_stage_completes_with_a_valid_submission(variant, tmp_path, caplog):
    data = degenerate_data(tmp_path, variant)
    with caplog.at_level(logging.INFO):
        assert run_pipeline(tmp_path, data, variant) == 0, caplog.text[-3000:]
    run_dir = tmp_path / "subs" / "run"

    test_pids = [str(r["Pid"]) for r in load_records(data / "test_category.json")]
    sub = pd.read_csv(run_dir / "submission.csv", dtype={"post_id": str})
    check_submission(np.array([f"post{p}" for p in test_pids]), sub["post_id"].to_numpy(),
                     sub["popularity_score"].to_numpy())
    board = pd.read_csv(tmp_path / "subs" / "leaderboard.csv")
    assert np.isfinite(board[["val_src", "val_mae", "test_src", "test_mae"]].to_numpy(dtype=float)).all()

    page = (run_dir / "report.html").read_text()
    assert "could not be" not in page, "a report figure failed"
    skipped = [line for line in caplog.text.splitlines() if "empty, skipped" in line]
    for note in EMPTY.get(variant, []):
        assert note in page, f"the report does not say: {note}"
    assert bool(skipped) == (variant in EMPTY), skipped
    assert page.count("is empty and was skipped") == len(EMPTY.get(variant, []))
    if variant in EMPTY:
        assert "[blend] done" in caplog.text and "[report] done" in caplog.text


# --- the rules behind the matrix, one at a time (fast) ------------------------------------------
def _encoded(n: int, has_image: np.ndarray, same_title: bool, seed: int = 0):
    from features.encoders import EncodedSplit
    rng = np.random.default_rng(seed)
    title = np.repeat(rng.normal(size=(1, 8)), n, axis=0) if same_title else rng.normal(size=(n, 8))
    return EncodedSplit(image=rng.normal(size=(n, 12)).astype(np.float16), has_image=has_image,
                        title=title.astype(np.float16), tags=rng.normal(size=(n, 8)).astype(np.float16),
                        tokens=np.zeros((n, 2, 8), np.float16), token_mask=np.ones((n, 2), bool))


def test_embedding_block_skips_a_modality_without_information():
    from features.encoders_reduce import embedding_features
    n = 30
    train = _encoded(n, np.zeros(n, bool), same_title=True)
    test = _encoded(10, np.ones(10, bool), same_title=False, seed=1)  # test images cannot be learnt from
    block, block_test, summary = embedding_features(train, test, np.arange(n).astype(str),
                                                    np.arange(10).astype(str), pca_dim=4)
    assert set(summary["skipped"]) == {"img", "title"} and "at least 2" in summary["skipped"]["img"]
    assert list(block.columns) == list(block_test.columns) == ["Pid"] + [f"emb_tags_{k}" for k in range(4)]
    train = _encoded(n, np.arange(n) < 2, same_title=False)  # two images are enough for a PCA
    block, _, summary = embedding_features(train, test, np.arange(n).astype(str), np.arange(10).astype(str), 4)
    assert summary["skipped"] == {} and "emb_has_image" in block and "emb_img_0" in block


def test_tag_statistics_without_any_tag_are_missing_not_an_error():
    from features.target_stats import target_statistics
    keys = pd.DataFrame({"Uid": list("aabbccdd"), "Alltags": [""] * 8})
    fit, apply = target_statistics(keys, np.arange(8.0), np.arange(8) % 2, keys.iloc[:3], ["Uid"], 10.0)
    for frame in (fit, apply):
        assert frame[["te_tag_mean", "te_tag_max", "te_tag_min"]].isna().all().all()
        assert np.isfinite(frame["te_Uid_mean"]).all()


def test_prototype_network_needs_two_classes_and_an_image_or_a_text():
    from models.train_prototype import ClassVocab, NothingToLearn, ProtoData, check_learnable
    n = 6
    posts = pd.DataFrame({"Category": ["Food"] * n, "Subcategory": ["Coffee"] * 3 + ["Tea"] * 3,
                          "Concept": ["c"] * n})
    vocab = ClassVocab.from_posts(posts)

    def data(has_image, text):
        return ProtoData(image=np.zeros((n, 4)), has_image=np.asarray(has_image), text=text,
                         tokens=np.zeros((n, 1, 3)), token_mask=np.ones((n, 1), bool), labels=vocab.encode(posts),
                         users=np.zeros(n), times=np.zeros(n), target=np.zeros(n))
    same_text, texts = np.ones((n, 3)), np.random.default_rng(0).normal(size=(n, 3))
    check_learnable(data(np.zeros(n, bool), texts), vocab)  # text alone is enough
    check_learnable(data(np.ones(n, bool), same_text), vocab)  # images alone too
    with pytest.raises(NothingToLearn, match="no train post has a usable image"):
        check_learnable(data(np.zeros(n, bool), same_text), vocab)
    one_class = ClassVocab.from_posts(posts.assign(Subcategory="Coffee"))
    with pytest.raises(NothingToLearn, match="1 subcategory"):
        check_learnable(data(np.ones(n, bool), texts), one_class)
