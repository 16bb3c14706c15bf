"""Share of the encode stage's text work that is the second (token) pass, on real-length texts (MiniLM, fp32, CPU).

    PYTHONPATH=. nice -n 10 python benchmarks/text_pass_share.py
"""
import time, numpy as np, torch
from features.encoders_text import load_text_encoder
from pipeline.config import EncoderConfig
rng = np.random.default_rng(0)
vocab = [f"w{i}" for i in range(3000)] + "the a sunset beach city night street portrait dog cat flower summer".split()
def text(lo, hi): return " ".join(rng.choice(vocab, rng.integers(lo, hi)))
n = 300
titles = [text(30, 120) for _ in range(n)]; tags = [text(5, 30) for _ in range(n)]
cfg = EncoderConfig(text="minilm", device="cpu", precision="fp32")
enc = load_text_encoder(cfg, torch.device("cpu"))
tok = [f"{a} {b}" for a, b in zip(titles, tags)]
for rep in range(2):
    t = time.process_time(); enc.sentences(titles + tags); s = time.process_time() - t
    t = time.process_time(); enc.words(tok, cfg.max_text_tokens); w = time.process_time() - t
    print(f"cpu s: sentences (titles+tags at {enc.max_length} tokens) {s:.2f}, token pass ({cfg.max_text_tokens} tokens) {w:.2f}, token share {w/(s+w):.2f}")
