"""The scale benchmark's data and arithmetic: synthetic SMPD images on request, the full-size extrapolation."""
from PIL import Image

from benchmarks.bench_scale import extrapolate
from benchmarks.synth_smpd import make_synthetic_smpd
from features.smpd import data_image_path, read_split


def test_synthetic_smpd_writes_an_image_per_post_only_when_asked(tmp_path):
    make_synthetic_smpd(tmp_path / "plain", fraction=1e-5)
    info = make_synthetic_smpd(tmp_path / "images", fraction=1e-5, image_size=(40, 30))
    for split in ("train", "test"):
        plain, _ = read_split(tmp_path / "plain", split)
        table, _ = read_split(tmp_path / "images", split)
        assert not plain["img_exists"].any()
        assert len(table) == info[f"n_{split}"] and table["img_exists"].all()
        with Image.open(data_image_path(tmp_path / "images", table["img_path"].iloc[0])) as image:
            assert image.size == (40, 30) and image.format == "JPEG"
    # the images are an addition: the official files are those of the run without them
    for name in ("train_text.json", "test_user_data.json", "train_img_filepath.txt", "train_label.txt"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "images" / name).read_bytes()


def test_extrapolation_of_a_linear_and_a_quadratic_stage():
    rows = [{"stage": "linear", "n": n, "cpu_s": 2.0 + 0.01 * n, "wall_s": 0.02 * n, "peak_mib": 100 + n / 10}
            for n in (1000, 2000, 4000)]
    rows += [{"stage": "square", "n": n, "cpu_s": (n / 1000) ** 2, "wall_s": 1.0, "peak_mib": 50.0}
             for n in (1000, 2000, 4000)]
    rows += [{"stage": "flat", "n": n, "cpu_s": c, "wall_s": c, "peak_mib": 300.0}
             for n, c in ((1000, 7.4), (2000, 6.9), (4000, 7.0))]
    out = extrapolate(rows, 400_000)
    assert out["flat"]["cpu_s_linear"] == 7.0  # a falling line of start-up noise: the last measured, not below
    assert out["linear"]["cpu_s_linear"] == 4002.0 and out["linear"]["peak_mib_linear"] == 40100.0
    assert out["linear"]["wall_s_exponent"] == 1.0 and out["linear"]["wall_s_power"] == 8000.0
    assert out["square"]["cpu_s_exponent"] == 2.0 and out["square"]["cpu_s_power"] == 160_000.0
    assert out["square"]["cpu_s_linear"] < out["square"]["cpu_s_power"]  # a line under-reads a growth above 1
