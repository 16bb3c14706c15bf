"""A full-size synthetic SMPD in the official file layout, written fast (vectorised, no images).

For the scale benchmark only: it has the real data set's sizes and shapes
(305,613 train and 180,581 test posts, about 70k users with a heavy-tailed
activity, 11 / 77 / 668 classes, Zipf-distributed tags and title words, free
text, gaps), every value a string as in SMPD. Image paths are listed but no
image is written (the reader counts them missing) unless `image_size` asks for
photo-like JPEGs (for runs that encode images: about 10 ms a 500x375 image to
write, so off by default); 512-d float16 embeddings
per modality stand in for the encoder output, in the encoder folder layout of
`features.encoders` (image, title, tags; no token arrays).

The demo generator (`features.demo`) is the realistic one; this one trades
realism of the label for speed: about a minute at full size.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent

from common.io import atomic_path, write_text  # noqa: E402

FULL_TRAIN, FULL_TEST = 305_613, 180_581
FULL_USERS = 70_000
EMB_DIM = 512
START = 1_446_336_000     # 2015-11-01 UTC
SPAN_S = 486 * 86400      # 16 months
TRAIN_SHARE_OF_TIME = 0.6
N_CATEGORIES, N_SUBCATEGORIES, N_CONCEPTS = 11, 77, 668
TAG_VOCAB, WORD_VOCAB = 300_000, 50_000
TIMEZONES = [("-08:00", "America/Los_Angeles"), ("-05:00", "America/New_York"), ("+00:00", "Europe/London"),
             ("+01:00", "Europe/Paris"), ("+05:30", "Asia/Kolkata"), ("+08:00", "Asia/Shanghai"),
             ("+09:00", "Asia/Tokyo"), ("+10:00", "Australia/Sydney")]


def sizes(fraction: float) -> tuple[int, int, int]:
    """Train posts, test posts and users at a fraction of the real size."""
    return (max(10, round(FULL_TRAIN * fraction)), max(10, round(FULL_TEST * fraction)),
            max(10, round(FULL_USERS * fraction)))


def _words(rng: np.random.Generator, vocab: np.ndarray, counts: np.ndarray, zipf: float) -> list[str]:
    """One space-joined string per row, `counts[i]` Zipf-drawn words of `vocab` each."""
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** zipf  # Zipf bounded to the vocabulary
    words = vocab[rng.choice(len(vocab), size=int(counts.sum()), p=weights / weights.sum())]
    ends = np.cumsum(counts)
    starts = ends - counts
    return [" ".join(words[s:e]) for s, e in zip(starts.tolist(), ends.tolist())]


def _to_json_records(frame: pd.DataFrame) -> str:
    # pandas writes the records in C; every column is a string, as in the official files
    return frame.to_json(orient="records", force_ascii=False)


def make_synthetic_smpd(data_dir: Path, fraction: float = 1.0, seed: int = 0,
                        image_size: tuple[int, int] | None = None) -> dict:
    """Write the official files of both splits into `data_dir`; return the sizes and the test labels.

    image_size: (width, height) of a photo-like JPEG written at every listed image path; None: no images."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train, n_test, n_users = sizes(fraction)
    n = n_train + n_test
    split = np.r_[np.zeros(n_train, dtype=np.int8), np.ones(n_test, dtype=np.int8)]

    # users: log-normal activity; some post in both periods, some only in one
    activity = np.exp(1.3 * rng.standard_normal(n_users))
    group = rng.choice(3, size=n_users, p=[0.5, 0.3, 0.2])  # 0 both, 1 train only, 2 test only
    group[np.argsort(-activity)[: max(1, n_users // 50)]] = 0
    skill = rng.standard_normal(n_users)
    uid = np.char.add(np.char.add(rng.permutation(np.arange(1000, 1000 + 3 * n_users))[:n_users].astype(str), "@N"),
                      np.char.zfill(rng.integers(0, 100, n_users).astype(str), 2))
    user = np.empty(n, dtype=np.int64)
    for s, allowed in ((0, 1), (1, 2)):
        weights = activity * np.isin(group, [0, allowed])
        user[split == s] = rng.choice(n_users, size=int((split == s).sum()), p=weights / weights.sum())

    split_time = START + int(TRAIN_SHARE_OF_TIME * SPAN_S)
    postdate = np.where(split == 0, rng.integers(START, split_time, n), rng.integers(split_time, START + SPAN_S, n))
    pid = rng.permutation(np.arange(10_000, 10_000 + 3 * n))[:n]

    sub_category = np.arange(N_SUBCATEGORIES) % N_CATEGORIES
    concept_sub = np.r_[np.arange(N_SUBCATEGORIES), rng.integers(0, N_SUBCATEGORIES, N_CONCEPTS - N_SUBCATEGORIES)]
    concept = np.minimum(rng.zipf(1.3, n) - 1, N_CONCEPTS - 1)
    concept = rng.permutation(N_CONCEPTS)[concept]
    subcategory = concept_sub[concept]
    category = sub_category[subcategory]

    tag_vocab = np.char.add("tag", np.arange(TAG_VOCAB).astype(str))
    word_vocab = np.char.add("w", np.arange(WORD_VOCAB).astype(str))
    n_tags = np.where(rng.random(n) < 0.12, 0, rng.poisson(9.0, n))
    n_title = np.where(rng.random(n) < 0.15, 0, rng.integers(1, 7, n))
    tags = _words(rng, tag_vocab, n_tags, 1.0)
    titles = _words(rng, word_vocab, n_title, 1.1)

    has_geo = rng.random(n) < 0.35
    lat = np.where(has_geo, np.round(rng.uniform(-60, 70, n), 6).astype(str), "")
    lon = np.where(has_geo, np.round(rng.uniform(-180, 180, n), 6).astype(str), "")
    geoacc = np.where(has_geo, rng.integers(1, 17, n).astype(str), "0")

    firstdate = START - rng.integers(0, 12 * 365 * 86400, n_users)
    taken = pd.to_datetime(firstdate - rng.integers(0, 5 * 365 * 86400, n_users), unit="s").strftime("%Y-%m-%d %H:%M:%S")
    taken = np.where(rng.random(n_users) < 0.03, "", np.asarray(taken, dtype=object))
    tz = rng.integers(0, len(TIMEZONES), n_users)
    tz_off = np.array([t[0] for t in TIMEZONES], dtype=object)[tz]
    tz_id = np.array([t[1] for t in TIMEZONES], dtype=object)[tz]
    desc_len = np.where(rng.random(n_users) < 0.45, 0, rng.integers(3, 40, n_users))
    descriptions = np.array(_words(rng, word_vocab, desc_len, 1.1), dtype=object)
    locations = np.where(rng.random(n_users) < 0.35, "", np.char.add("City", rng.integers(0, 3000, n_users).astype(str)))
    alias = np.where(rng.random(n_users) < 0.3, "None", np.char.add("alias", np.arange(n_users).astype(str)))
    photo_count = np.floor(np.exp(6.0 + 1.1 * rng.standard_normal(n_users))).astype(np.int64) + 1
    ispro = (rng.random(n_users) < 1 / (1 + np.exp(1.3 - 1.2 * skill))).astype(np.int64)

    # label: user, class and tag effects plus noise, on the real scale (mean 6.4, std 2.5)
    effect = rng.normal(0, 0.5, N_CONCEPTS)[concept] + 1.5 * skill[user] + 0.2 * np.log1p(n_tags) + 0.2 * has_geo
    effect = effect - 0.8 * (postdate - START) / SPAN_S + rng.standard_normal(n)
    label = np.round(np.clip(6.4 + 2.5 * (effect - effect[:n_train].mean()) / effect[:n_train].std(), 1.0, 16.56), 2)

    s = lambda a: np.asarray(a).astype(str)  # noqa: E731  (official files: every value a string)
    columns = {
        "category": {"Category": np.char.add("Cat", s(category)), "Subcategory": np.char.add("Sub", s(subcategory)),
                     "Concept": np.char.add("concept", s(concept))},
        "text": {"Title": np.asarray(titles, dtype=object), "Mediatype": np.where(rng.random(n) < 0.02, "video", "photo"),
                 "Alltags": np.asarray(tags, dtype=object)},
        "temporalspatial_information": {"Postdate": s(postdate), "Latitude": lat, "Longitude": lon,
                                        "Geoaccuracy": geoacc},
        "user_data": {"photo_firstdate": s(firstdate[user]), "photo_count": s(photo_count[user]),
                      "ispro": s(ispro[user]), "canbuypro": s(1 - ispro[user]), "timezone_offset": tz_off[user],
                      "photo_firstdatetaken": taken[user], "timezone_timezone_id": tz_id[user],
                      "user_description": descriptions[user], "location_description": locations[user]},
        "additional_information": {"Pathalias": alias[user], "Ispublic": np.full(n, "1"),
                                   "Mediastatus": np.full(n, "ready")},
    }
    img_path = np.char.add(np.char.add(np.char.add(np.where(split == 0, "train/", "test/"), uid[user]), "/"),
                           np.char.add(s(pid), ".jpg"))
    for code, name in enumerate(("train", "test")):
        rows = np.flatnonzero(split == code)
        base = {"Uid": uid[user[rows]], "Pid": s(pid[rows])}
        for kind, fields in columns.items():
            frame = pd.DataFrame({**base, **{k: np.asarray(v)[rows] for k, v in fields.items()}})
            write_text(data_dir / f"{name}_{kind}.json", _to_json_records(frame))
        write_text(data_dir / f"{name}_img_filepath.txt", "\n".join(img_path[rows].tolist()) + "\n")
    if image_size is not None:
        for post in range(n):  # the image's content seeded by its post, so a size's images never change
            path = data_dir / img_path[post]
            path.parent.mkdir(parents=True, exist_ok=True)
            write_photo((path, int(pid[post]), *image_size))
    write_text(data_dir / "train_label.txt", "".join(f"{v:.2f}\n" for v in label[:n_train]))
    latent = np.c_[skill[user], rng.normal(0, 1, (N_CONCEPTS, 7))[concept]]  # what the embeddings encode
    return {"n_train": n_train, "n_test": n_test, "n_users": n_users, "test_labels": label[n_train:],
            "latent": latent.astype(np.float32)}


def write_photo(args: tuple[Path, int, int, int]) -> None:
    """A photo-like JPEG: smooth shapes, blur and sensor noise (compresses like a real photo)."""
    from PIL import Image, ImageDraw, ImageFilter
    path, seed, width, height = args
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(-50, width)), int(rng.integers(-50, height))
        w, h = (int(v) for v in rng.integers(20, max(21, width // 2), 2))  # small images: shapes may overflow
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(img, np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def write_embeddings(paths: dict[str, dict[str, Path]], latent: np.ndarray, n_train: int, seed: int = 0,
                     chunk: int = 65_536) -> None:
    """512-d float16 stand-ins for the encoder output: a projection of `latent` plus noise.

    paths: modality -> split -> .npy path. Written in chunks through a memory map, so the
    generator never holds a full array in float32.
    """
    rng = np.random.default_rng([seed, 7])
    for modality, by_split in paths.items():
        projection = rng.standard_normal((latent.shape[1], EMB_DIM)).astype(np.float32)
        for split, path in by_split.items():
            rows = np.arange(n_train) if split == "train" else np.arange(n_train, len(latent))
            with atomic_path(path) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(rows), EMB_DIM))
                for start in range(0, len(rows), chunk):
                    part = rows[start:start + chunk]
                    noise = rng.standard_normal((len(part), EMB_DIM), dtype=np.float32)
                    out[start:start + len(part)] = (latent[part] @ projection * 0.3 + noise).astype(np.float16)
                out.flush()
                del out


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description="write a synthetic full-size SMPD (no images unless --images)")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", metavar="WxH", help="write a photo-like JPEG of this size per post (e.g. 500x375)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.images.lower().split("x")) if args.images else None
    info = make_synthetic_smpd(args.out_dir, args.fraction, args.seed, image_size=size)
    print(json.dumps({k: v for k, v in info.items() if isinstance(v, int)}))


if __name__ == "__main__":
    main()
