"""The multimodal prototype network (method.md, stage B): one readable file.

Parts, each behind a switch of `PrototypeArgs` so that an ablation can remove it:
- prototypes: per class, the mean embedding of up to `shots` training posts chosen
  for diversity (`select_shots`, `build_prototypes`); at subcategory level, and with
  `hierarchical` also at category and concept level;
- dual-grained prompts (`PromptLearner`): learnable context vectors in front of each
  class name's token embeddings, run through a frozen text backbone; global (G_k,
  `use_prompts_global`) and local (L_k, `use_prompts_local`);
- cross-modal attention (`use_attention`): the post's image token and the projected
  visual and textual prototypes pass together through transformer self-attention;
- losses (`PrototypeNet.loss_terms`): L_g, L_o, L_c, the hierarchical contrast L_h and
  the optional auxiliary popularity regression L_a (`aux_regression`, our addition).

The network takes plain tensors (a batch dict, see `PrototypeNet.forward`), so it does
not care where the features come from. The text backbone is any object with
`token_embedding(input_ids) -> (K, L, W)` and `forward_embeds(inputs_embeds,
attention_mask) -> (pooled (K, D), tokens (K, L, D))`; it stays frozen and is not part
of the network's parameters or state dict.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PrototypeArgs:
    """What builds the network (config `prototype.model`); every checkpoint stores it as `model_args`.

    width: the common space of image, text and prototypes; global_context / local_context:
    learnable context vectors of the global and local prompts; attn_heads: heads of the one
    cross-modal attention layer; tau: temperature of the prompt heads, tau_s of the local
    prompts' token weights, tau_v / tau_t of the visual / textual prototype contrast.
    """
    width: int = 256
    global_context: int = 16
    local_context: int = 8
    use_prompts_global: bool = True
    use_prompts_local: bool = True
    use_attention: bool = True
    hierarchical: bool = True
    aux_regression: bool = False
    attn_heads: int = 4
    tau: float = 0.07
    tau_s: float = 0.1
    tau_v: float = 0.07
    tau_t: float = 0.07


@dataclass
class LossWeights:
    """The weight of each loss term (config `prototype.loss`): L_g, L_o, L_c, L_h and L_a."""
    weight_global: float = 1.0
    weight_local: float = 1.0
    weight_contrast: float = 1.0
    weight_hierarchy: float = 0.5
    weight_aux: float = 1.0

# Levels of the class hierarchy, finest first; "sub" is the pretext task's label.
LEVEL_COLUMNS = {"sub": "Subcategory", "cat": "Category", "concept": "Concept"}
# Levels whose prototypes join the attention sequence; concepts (668 in SMPD) would
# make the sequence ~9x longer for every post, so they are contrasted after attention.
ATTENDED_LEVELS = ("sub", "cat")
MASKED_LOGIT = -1e4  # logit of a class without prototypes: exp() underflows to 0, no NaN


def class_text(name: str) -> str:
    """Class name as prompt text: 'Health,Fitness' -> 'Health Fitness', 'StreetArt' -> 'Street Art'."""
    text = re.sub(r"[,&_/\-]+", " ", str(name))
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # split CamelCase, keep acronyms (OOTD)
    return " ".join(text.split()) or str(name)


# --- prototypes ----------------------------------------------------------------------
def select_shots(labels: np.ndarray, n_classes: int, users: np.ndarray, times: np.ndarray,
                 shots: int, seed: int) -> list[np.ndarray]:
    """Rows (indices into `labels`) chosen per class: at most `shots`, spread over users and time.

    A class's rows are taken in tiers: tier r holds the r-th post of every user of the
    class (each user's posts in a seeded random order), so no user gets a second shot
    before every user has one. The last tier that does not fit whole is subsampled
    evenly over time. Labels < 0 (unknown class) are never chosen.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    chosen: list[np.ndarray] = []
    for k in range(n_classes):
        rows = np.flatnonzero(labels == k)
        if len(rows) <= shots:
            chosen.append(rows)
            continue
        rows = rows[rng.permutation(len(rows))]
        _, user_codes = np.unique(users[rows], return_inverse=True)
        # rank of each row within its user (stable sort keeps the random order)
        order = np.argsort(user_codes, kind="stable")
        sorted_codes = user_codes[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        picked: list[np.ndarray] = []
        left = shots
        for tier in range(int(rank.max()) + 1):
            tier_rows = rows[rank == tier]
            tier_rows = tier_rows[np.argsort(times[tier_rows], kind="stable")]
            if len(tier_rows) <= left:
                picked.append(tier_rows)
                left -= len(tier_rows)
            else:
                picked.append(tier_rows[np.linspace(0, len(tier_rows) - 1, left).round().astype(np.int64)])
                left = 0
            if left == 0:
                break
        chosen.append(np.sort(np.concatenate(picked)))
    return chosen


def build_prototypes(features: np.ndarray, usable: np.ndarray, labels: np.ndarray, n_classes: int,
                     users: np.ndarray, times: np.ndarray, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the mean of the L2-normalised `features` of up to `shots` diverse rows.

    usable: rows that may be used (training rows; for images, rows that have one).
    Returns (prototypes (K, D) float32, valid (K,) bool); a class without usable rows
    gets a zero prototype and valid False.
    """
    labels = np.where(usable, labels, -1)
    protos = np.zeros((n_classes, features.shape[1]), dtype=np.float32)
    valid = np.zeros(n_classes, dtype=bool)
    for k, rows in enumerate(select_shots(labels, n_classes, users, times, shots, seed)):
        if len(rows):
            x = features[rows].astype(np.float32)
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
            protos[k] = x.mean(axis=0)
            valid[k] = True
    return protos, valid


@dataclass
class LevelPrototypes:
    """Visual and textual prototypes of one level of the class hierarchy."""
    visual: torch.Tensor   # (K, image_dim)
    textual: torch.Tensor  # (K, text_dim)
    valid: torch.Tensor    # (K,) bool: the class had training rows


# --- dual-grained prompts ----------------------------------------------------------------
def tokenize_class_names(tokenizer, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (with the tokenizer's begin/end tokens) and mask of each class name's text."""
    enc = tokenizer([class_text(n) for n in names], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"].bool()


class PromptLearner(nn.Module):
    """[first token, theta_1..n, class-name tokens, end token] -> frozen text backbone -> pooled (K, D).

    The context vectors theta are shared by all classes (CoOp) and are the only
    parameters; the class names' token embeddings are a fixed buffer. They go in after
    the first token, so a CLIP prompt keeps its BOS and a BERT prompt its [CLS].
    """

    def __init__(self, backbone, name_ids: torch.Tensor, name_mask: torch.Tensor, n_ctx: int):
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"prompt context length must be at least 1, got {n_ctx}")
        self.__dict__["backbone"] = backbone  # frozen and shared: not a submodule, not in state_dict
        with torch.no_grad():
            # the backbone may already sit on the GPU; the class-name ids come from the CPU
            weight_device = next(backbone.parameters()).device
            name_embeds = backbone.token_embedding(name_ids.to(weight_device)).float()
        self.register_buffer("name_embeds", name_embeds, persistent=False)
        self.register_buffer("name_mask", name_mask.bool(), persistent=False)
        self.ctx = nn.Parameter(torch.randn(n_ctx, name_embeds.shape[-1]) * 0.02)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The K prompts as backbone input: embeddings (K, L, W) and mask (K, L)."""
        k = self.name_embeds.shape[0]
        ctx = self.ctx.unsqueeze(0).expand(k, -1, -1).to(self.name_embeds.dtype)
        embeds = torch.cat([self.name_embeds[:, :1], ctx, self.name_embeds[:, 1:]], dim=1)
        ctx_mask = torch.ones(k, self.ctx.shape[0], dtype=torch.bool, device=self.name_mask.device)
        mask = torch.cat([self.name_mask[:, :1], ctx_mask, self.name_mask[:, 1:]], dim=1)
        return embeds, mask

    def forward(self) -> torch.Tensor:
        return prompt_passes([self])[0]


def prompt_passes(learners: list[PromptLearner], fuse: bool | None = None) -> list[torch.Tensor]:
    """Pooled features (K, D) of every learner's prompts, in as few backbone passes as pay.

    A backbone with `forward_prompts(contexts, name_embeds, name_mask)` (a causal one: CLIP) runs
    the class-independent prefix [first token, theta] once per learner instead of once per class.
    Any other backbone gets the full prompts: on a GPU the learners go in one padded batch (one
    pass of kernel launches, not one per learner); on a CPU padding is compute, so one pass each
    (`fuse` None); `fuse` True or False forces either way.
    """
    first = learners[0]
    for other in learners[1:]:
        if other.backbone is not first.backbone or other.name_embeds.shape != first.name_embeds.shape:
            raise ValueError("prompt learners run together must share the backbone and the class names")
    backbone = first.backbone
    shared_prefix = getattr(backbone, "forward_prompts", None)
    if shared_prefix is not None:
        pooled = shared_prefix([p.ctx for p in learners], first.name_embeds, first.name_mask)
        return [p.float() for p in pooled]
    if fuse is None:
        fuse = first.name_embeds.device.type == "cuda"
    if not fuse or len(learners) == 1:
        return [backbone.forward_embeds(*p.sequences())[0].float() for p in learners]
    prompts = [p.sequences() for p in learners]
    length = max(embeds.shape[1] for embeds, _ in prompts)
    embeds = torch.cat([F.pad(e, (0, 0, 0, length - e.shape[1])) for e, _ in prompts])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in prompts])  # right padding, masked out
    pooled, _ = backbone.forward_embeds(embeds, mask)
    return list(pooled.float().split([e.shape[0] for e, _ in prompts]))


# --- cross-modal attention ---------------------------------------------------------------
class CrossModalAttention(nn.Module):
    """One pre-norm transformer self-attention layer over the sequence [x_b, P_1..P_S] of every
    post b (x_b: its image token; P: the projected prototypes, the same for every post),
    computed without copying the S prototype tokens into every post's sequence.

    The attention is exact. A prototype token's softmax over [x_b, P] splits into its
    softmax over P alone, shared by all posts and computed once, and the weight it puts on x_b:
        out_ib = (1 - a_ib) A_i + a_ib v(x_b),  a_ib = sigmoid(q_i.k(x_b) - logsumexp_j q_i.k(P_j)),
    so the cost per post is O(S d) instead of O(S^2 d + S d^2). The MLP runs on the post
    token only: on every (post, prototype) pair it would cost S times the rest of the layer.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"prototype.model.width {width} is not divisible by prototype.model.attn_heads {heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        # residual branches start at zero: the layer starts as the identity (the network without
        # attention) and learns how much to mix; a random start blurs every prototype towards
        # the same shared vector and slows the contrast down
        for layer in (self.out, self.mlp[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, protos: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, d), protos (S, d), valid (S,) bool (invalid prototypes are never attended to)
        -> attended post tokens (B, d) and prototype tokens (B, S, d)."""
        b, d = x.shape
        s, h = protos.shape[0], self.heads
        qx, kx, vx = self.qkv(self.norm(x)).view(b, 3, h, d // h).unbind(1)            # (B, h, dh)
        qp, kp, vp = self.qkv(self.norm(protos)).view(s, 3, h, d // h).unbind(1)       # (S, h, dh)
        scale = (d // h) ** -0.5
        hidden = torch.where(valid, 0.0, float("-inf")).to(qx.dtype)                    # key mask (S,)
        # post token: softmax over [x_b, P]
        logits_x = torch.cat([(qx * kx).sum(-1, keepdim=True) * scale,
                              torch.einsum("bhd,jhd->bhj", qx, kp) * scale + hidden], dim=-1)
        w = torch.softmax(logits_x, dim=-1)
        att_x = w[..., :1] * vx + torch.einsum("bhj,jhd->bhd", w[..., 1:], vp)         # (B, h, dh)
        # prototype tokens: shared attention over P, blended with v(x_b)
        logits_pp = torch.einsum("ihd,jhd->hij", qp, kp) * scale + hidden               # (h, S, S)
        shared = torch.einsum("hij,jhd->ihd", torch.softmax(logits_pp, dim=-1), vp)     # (S, h, dh)
        a = torch.sigmoid(torch.einsum("ihd,bhd->bhi", qp, kx) * scale - torch.logsumexp(logits_pp, -1))
        # out-projection is linear, so project per head first: W_h A_i and W_h v(x_b)
        w_out = self.out.weight.view(d, h, d // h)
        out_shared = torch.einsum("ehd,ihd->ihe", w_out, shared)                        # (S, h, d)
        out_x = torch.einsum("ehd,bhd->bhe", w_out, vx)                                 # (B, h, d)
        protos_att = (protos + self.out.bias + out_shared.sum(1))[None] \
            + torch.einsum("bhi,bhe->bie", a, out_x) - torch.einsum("bhi,ihe->bie", a, out_shared)
        x_att = x + self.out(att_x.reshape(b, d))
        x_att = x_att + self.mlp(self.mlp_norm(x_att))
        return x_att, protos_att


# --- the network ---------------------------------------------------------------------------
def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Per-post cross-entropy; NaN where the label is unknown (< 0) or `keep` is False."""
    keep = labels >= 0 if keep is None else keep & (labels >= 0)
    loss = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    return torch.where(keep, loss, torch.full_like(loss, float("nan")))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of a (..., d) against b (..., K, d) or (K, d) -> (..., K)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    if b.dim() == 2:
        return a @ b.T
    return torch.einsum("bd,bkd->bk", a, b)


class PrototypeNet(nn.Module):
    """Dual-grained prompts + prototypes + cross-modal attention over one class hierarchy.

    args: the architecture (PrototypeArgs); weights: the loss weights. prototypes: level ->
    LevelPrototypes, "sub" always, "cat" and "concept" when args.hierarchical. backbone,
    name_ids, name_mask: the frozen text backbone and the tokenised subcategory names (only
    needed when a prompt switch is on).
    sub_to_cat: (K_sub,) category index of each subcategory (-1 unknown), for the
    category probability of the subcategory head.
    """

    def __init__(self, args: PrototypeArgs, weights: LossWeights, image_dim: int, text_dim: int,
                 prototypes: dict[str, LevelPrototypes], backbone=None, name_ids: torch.Tensor | None = None,
                 name_mask: torch.Tensor | None = None, sub_to_cat: torch.Tensor | None = None):
        super().__init__()
        self.args, self.weights = args, weights
        self.levels = ["sub"] + (["cat", "concept"] if args.hierarchical else [])
        missing = [lv for lv in self.levels if lv not in prototypes]
        if missing:
            raise ValueError(f"prototypes for level(s) {missing} are missing (hierarchical={args.hierarchical})")
        for level in self.levels:
            protos = prototypes[level]
            self.register_buffer(f"{level}_visual", protos.visual.float())
            self.register_buffer(f"{level}_textual", protos.textual.float())
            self.register_buffer(f"{level}_valid", protos.valid.bool())
        self.n_classes = {lv: int(prototypes[lv].valid.shape[0]) for lv in self.levels}
        if sub_to_cat is None:
            sub_to_cat = torch.full((self.n_classes["sub"],), -1, dtype=torch.long)
        self.register_buffer("sub_to_cat", sub_to_cat.long())

        # prompts: G_k and L_k share the frozen backbone, not their context vectors
        self.global_prompts = self.local_prompts = None
        if args.use_prompts_global or args.use_prompts_local:
            if backbone is None or name_ids is None:
                raise ValueError("prompt learning is on but no text backbone / class-name tokens were given")
            if getattr(backbone, "dim", text_dim) != text_dim:
                raise ValueError(f"the text backbone gives {backbone.dim}-d features but the posts' text features "
                                 f"are {text_dim}-d: prompts and posts must come from the same text encoder")
            if name_ids.shape[0] != self.n_classes["sub"]:
                raise ValueError(f"{name_ids.shape[0]} class names for {self.n_classes['sub']} subcategories")
            if args.use_prompts_global:
                self.global_prompts = PromptLearner(backbone, name_ids, name_mask, args.global_context)
            if args.use_prompts_local:
                self.local_prompts = PromptLearner(backbone, name_ids, name_mask, args.local_context)

        # prototype branch: images and visual prototypes share one projection (same space)
        d = args.width
        self.image_proj = nn.Linear(image_dim, d)
        self.text_proj = nn.Linear(text_dim, d)
        self.missing_image = nn.Parameter(torch.zeros(d))
        attended = [lv for lv in self.levels if lv in ATTENDED_LEVELS]
        # token-kind embeddings: post, then (visual, textual) per attended level
        self.kind = nn.Parameter(torch.randn(1 + 2 * len(attended), d) * 0.02)
        self.attention = CrossModalAttention(d, args.attn_heads) if args.use_attention else None
        self.aux_head = nn.Linear(d, 1) if args.aux_regression else None

    # -- helpers ----------------------------------------------------------------------
    def level_protos(self, level: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (getattr(self, f"{level}_visual"), getattr(self, f"{level}_textual"),
                getattr(self, f"{level}_valid"))

    def prompt_features(self) -> dict[str, torch.Tensor]:
        """G (K, D) and L (K, D): the prompts of every subcategory (`prompt_passes`)."""
        learners = {name: p for name, p in (("G", self.global_prompts), ("L", self.local_prompts)) if p is not None}
        if not learners:
            return {}
        return dict(zip(learners, prompt_passes(list(learners.values()))))

    # -- forward ----------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], prompts: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """batch: image (B, Di), has_image (B,) bool, text (B, Dt) pooled post text,
        tokens (B, T, Dt), token_mask (B, T) bool. prompts: `prompt_features()`, passed
        in to reuse them over batches when the network is frozen; computed when None.

        Returns logits per head ("logits_global", "logits_local", "logits_contrast_<level>"),
        "logits_sub" (mean of the subcategory heads), the attended post feature "x",
        the attention-weighted prototypes "v", "t", the prompt features weighted by the
        class probabilities "g", "l", and "aux" (standardised popularity) when on.
        """
        args = self.args
        out: dict[str, torch.Tensor] = {}
        if prompts is None:
            prompts = self.prompt_features()
        if "G" in prompts:  # L_g: post text vs global prompts (coarse)
            out["logits_global"] = cosine(batch["text"], prompts["G"]) / args.tau
        if "L" in prompts:  # L_o: text tokens vs local prompts, softmax-aggregated over tokens
            tokens, mask = F.normalize(batch["tokens"].float(), dim=-1), batch["token_mask"]
            sim = torch.einsum("btd,kd->bkt", tokens, F.normalize(prompts["L"].float(), dim=-1))
            weights = torch.softmax((sim / args.tau_s).masked_fill(~mask[:, None, :], float("-inf")), dim=-1)
            weights = torch.nan_to_num(weights, nan=0.0)  # a post without tokens: all-zero scores
            out["logits_local"] = (weights * sim).sum(-1) / args.tau
            out["has_tokens"] = mask.any(-1)

        # prototype branch: [x, V_sub, T_sub, (V_cat, T_cat)] -> self-attention
        x = self.image_proj(batch["image"].float())
        x = torch.where(batch["has_image"][:, None], x, self.missing_image.to(x.dtype)) + self.kind[0]
        tokens, valid_tokens, spans = [], [], {}
        start, kind = 0, 1
        for level in self.levels:
            if level not in ATTENDED_LEVELS:
                continue
            vis, txt, valid = self.level_protos(level)
            k = vis.shape[0]
            tokens += [self.image_proj(vis) + self.kind[kind], self.text_proj(txt) + self.kind[kind + 1]]
            valid_tokens += [valid, valid]
            spans[level] = (start, start + k, start + 2 * k)
            start, kind = start + 2 * k, kind + 2
        protos = torch.cat(tokens)  # (S, d), the same for every post
        if self.attention is not None:
            x_att, protos = self.attention(x, protos, torch.cat(valid_tokens))  # (B, d), (B, S, d)
        else:
            x_att = x
        out["x"] = x_att
        for level in self.levels:
            vis, txt, valid = self.level_protos(level)
            if level in spans:
                s0, s1, s2 = spans[level]
                v_att, t_att = protos[..., s0:s1, :], protos[..., s1:s2, :]
            else:  # not attended (concepts): projected prototypes, the same for every post
                v_att, t_att = self.image_proj(vis), self.text_proj(txt)
            sim_v = cosine(x_att, v_att) / args.tau_v
            sim_t = cosine(x_att, t_att) / args.tau_t
            out[f"logits_contrast_{level}"] = (0.5 * (sim_v + sim_t)).masked_fill(~valid, MASKED_LOGIT)
            if level == "sub":  # attention-weighted prototypes (weights: the contrast itself)
                w_v = torch.softmax(sim_v.masked_fill(~valid, MASKED_LOGIT), dim=-1)
                w_t = torch.softmax(sim_t.masked_fill(~valid, MASKED_LOGIT), dim=-1)
                out["v"] = _weighted(w_v, v_att)
                out["t"] = _weighted(w_t, t_att)

        heads = [out[h] for h in ("logits_global", "logits_local", "logits_contrast_sub") if h in out]
        out["logits_sub"] = torch.stack(heads).mean(0)
        probs = torch.softmax(out["logits_sub"], dim=-1)
        if "G" in prompts:
            out["g"] = probs @ prompts["G"].float()
        if "L" in prompts:
            out["l"] = probs @ prompts["L"].float()
        if self.aux_head is not None:
            out["aux"] = self.aux_head(x_att).squeeze(-1)
        return out

    def projected_parts(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the paper's regression stage stacks, each part reduced to the width d by the network's
        own projections (`prototype.stack: paper`): the post's image and pooled text, x~, its attention-
        weighted V~ and T~, and the class-probability-weighted prompt features G, L (text projection)."""
        image = self.image_proj(batch["image"].float())
        parts = {"image": torch.where(batch["has_image"][:, None], image, self.missing_image.to(image.dtype)),
                 "text": self.text_proj(batch["text"].float()), "x": out["x"], "v": out["v"], "t": out["t"]}
        for name in ("g", "l"):
            if name in out:
                parts[name] = self.text_proj(out[name].float())
        return parts

    # -- losses ------------------------------------------------------------------------
    def loss_terms(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-post losses (B,) of every active part, weighted; NaN where a post has no label.

        Keys: "global" (L_g), "local" (L_o), "contrast" (L_c), "hierarchy" (L_h: mean of the
        category and concept contrasts), "aux" (L_a). The training loss is `total_loss`.
        """
        args, w = self.args, self.weights
        y = batch["label_sub"]
        terms: dict[str, torch.Tensor] = {}
        if "logits_global" in out:
            terms["global"] = w.weight_global * masked_cross_entropy(out["logits_global"], y)
        if "logits_local" in out:
            terms["local"] = w.weight_local * masked_cross_entropy(out["logits_local"], y, out["has_tokens"])
        terms["contrast"] = w.weight_contrast * self._contrast_loss("sub", out, batch)
        if args.hierarchical:
            parts = [self._contrast_loss(lv, out, batch) for lv in ("cat", "concept")]
            terms["hierarchy"] = w.weight_hierarchy * torch.stack(parts).nanmean(0)
        if "aux" in out:
            target = batch["target"]
            err = (out["aux"].float() - torch.nan_to_num(target)) ** 2
            terms["aux"] = w.weight_aux * torch.where(torch.isnan(target), torch.full_like(err, float("nan")), err)
        return terms

    def _contrast_loss(self, level: str, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Prototype contrast at one level; NaN for a post whose class has no prototype in this model
        (a class the training rows never show: its logit is masked, its loss would be ~1e4)."""
        labels, valid = batch[f"label_{level}"], self.level_protos(level)[2]
        keep = valid[labels.clamp(min=0)]
        return masked_cross_entropy(out[f"logits_contrast_{level}"], labels, keep)


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over parts of the mean over the posts that have that part's label."""
    total = None
    for value in terms.values():
        keep = ~torch.isnan(value)
        part = torch.where(keep, value, torch.zeros_like(value)).sum() / keep.sum().clamp(min=1)
        total = part if total is None else total + part
    return total


def pretext_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-post pretext (classification) loss: sum of the classification terms a post has; NaN if none."""
    parts = [terms[k] for k in ("global", "local", "contrast", "hierarchy") if k in terms]
    stacked = torch.stack(parts)
    known = ~torch.isnan(stacked)
    summed = torch.where(known, stacked, torch.zeros_like(stacked)).sum(0)
    return torch.where(known.any(0), summed, torch.full_like(summed, float("nan")))


def _weighted(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, K) weights times (B, K, d) or (K, d) values -> (B, d)."""
    if values.dim() == 2:
        return weights @ values
    return torch.einsum("bk,bkd->bd", weights, values)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp(min=1e-12))).sum(-1) / math.log(max(probs.shape[-1], 2))
