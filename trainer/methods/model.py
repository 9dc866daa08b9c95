"""PDM and its two baselines behind one factory, `build_model(config, num_classes, style_vocab)`.

Every method shares the CLIP backbone and the Re-ID head (BNNeck + bias-free ID classifier) and the
phase-2 objective (ID + triplet, plus image-to-text for the prompt methods); they differ in phase 1:

    method     phases  phase 1 trains               phase-2 text targets (identity bank)
    bot        2       -                            none (ID + triplet only)
    clipreid   1, 2    per-identity context tokens  "a photo of a X1..X4 person" per identity
    pdm        1, 2    style/content inversion      mean content prompt "a photo of a [C] person"
                       networks + style heads       over each identity's images

The training loop drives it through: `set_phase(p)` (freezes exactly the parameters that phase must not
change), `trainable_parameters()`, `loss(batch) -> (total, {name: value})`, and `encode_images(x)` for
retrieval. PDM needs `build_identity_bank(batches)` once between phase 1 and phase 2 (clipreid builds its
bank itself on `set_phase(2)`). Exact losses, weights and schedules: docs/method.md.

One module past ~400 lines on purpose: the three methods differ in a few methods of one model, and the
table above is checked most easily against one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from dppp.foundation.errors import ConfigError, DataError
from dppp.trainer.methods import losses
from dppp.trainer.clip.backbone import VISION_PREFIXES, ClipBackbone, load_backbone
from dppp.trainer.methods.config import ModelConfig
from dppp.trainer.methods.inversion import TextualInversion
from dppp.trainer.methods.text_prompts import compile_prompt, encode_prompt, placeholder_tokens

Batch = Mapping[str, object]


class ReIDModel(nn.Module):
    """The shared part: backbone, BNNeck (Luo et al. 2019), ID classifier, phase switching, phase 2."""

    method = ""
    phases: tuple[int, ...] = (2,)
    uses_identity_bank = False

    def __init__(
        self, config: ModelConfig, num_classes: int, style_vocab: Mapping[str, int], backbone: ClipBackbone
    ):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.style_vocab = dict(style_vocab)
        self.backbone = backbone
        dim = backbone.embed_dim
        self.bnneck = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        if self.uses_identity_bank:
            # Normalised text feature of every identity, and whether it has been computed.
            self.register_buffer("identity_text", torch.zeros(num_classes, dim))
            self.register_buffer("identity_known", torch.zeros(num_classes, dtype=torch.bool))
        self.phase = 0

    def temperature(self, name: str) -> float:
        """`<name>_temperature` of the config, "backbone" resolved to the CLIP's own learned value."""
        value = getattr(self.config, f"{name}_temperature")
        return self.backbone.learned_temperature if value == "backbone" else float(value)

    # ---- phases ---------------------------------------------------------------------------------------

    def trains_in_phase(self, name: str, phase: int) -> bool:
        """Whether parameter `name` is optimised in `phase` (phase 2 here; subclasses add phase 1)."""
        if phase != 2:
            return False
        # The BNNeck's shift stays 0 (Luo et al.): only its scale learns.
        return name.startswith(tuple("backbone." + p for p in VISION_PREFIXES)) or name in (
            "bnneck.weight",
            "classifier.weight",
        )

    def set_phase(self, phase: int) -> None:
        if phase not in self.phases:
            raise ValueError(f"method {self.method!r} has phases {list(self.phases)}, not {phase}")
        for name, param in self.named_parameters():
            param.requires_grad_(self.trains_in_phase(name, phase))
        self.phase = phase

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ---- retrieval ------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Retrieval embeddings [B, embed_dim], L2-normalised, always in eval mode (BN running stats):
        the BNNeck output by default (`retrieval_feature: bn`), else the feature before it."""
        was_training = self.training
        self.eval()
        try:
            feature = self.backbone.encode_image(pixel_values)
            if self.config.retrieval_feature == "bn":
                feature = self.bnneck(feature)
        finally:
            self.train(was_training)
        return F.normalize(feature, dim=-1)

    # ---- losses ---------------------------------------------------------------------------------------

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted total, {name: unweighted loss, detached}) of the current phase on one batch."""
        if self.phase not in self.phases:
            raise RuntimeError("call set_phase() before loss()")
        parts = self.phase1_losses(batch) if self.phase == 1 else self.phase2_losses(batch)
        weights = self.config.weights
        total = sum(getattr(weights, name) * value for name, value in parts.items())
        return total, {name: value.detach() for name, value in parts.items()}

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def phase2_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        pids = batch_pids(batch, self.num_classes)
        feature = self.backbone.encode_image(batch["pixel_values"])
        self._phase2_feature = feature  # for a subclass's extra phase-2 terms on the same forward
        logits = self.classifier(self.bnneck(feature))
        parts = {
            "id": losses.label_smoothing_cross_entropy(logits, pids, self.config.label_smoothing),
            "triplet": losses.batch_hard_triplet(feature, pids, self.config.triplet_margin),
        }
        if self.uses_identity_bank:
            parts["i2t"] = self.image_to_identity_text(feature, pids)
        return parts

    def image_to_identity_text(self, feature: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """CE of each image against every identity's (frozen) text feature, target = its own identity."""
        if not bool(self.identity_known.any()):
            raise RuntimeError(
                f"{self.method}: the identity text bank is empty; call build_identity_bank() first"
            )
        missing = sorted(set(pids[~self.identity_known[pids]].tolist()))
        if missing:
            raise ValueError(
                f"identities {missing[:10]} have no text feature in the bank (not seen when it was built)"
            )
        logits = F.normalize(feature, dim=-1) @ self.identity_text.t() / self.temperature("i2t")
        logits = logits.masked_fill(~self.identity_known[None, :], float("-inf"))
        return F.cross_entropy(logits, pids)

    def set_identity_bank(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Store mean text features from per-identity sums [K, D] and counts [K] (e.g. all-reduced across
        workers). Identities with count 0 stay unknown."""
        known = counts > 0
        mean = sums / counts.clamp(min=1)[:, None].to(sums.dtype)
        self.identity_text.copy_(F.normalize(mean, dim=-1) * known[:, None])
        self.identity_known.copy_(known)


class BoT(ReIDModel):
    """Bag of Tricks baseline (Luo et al. 2019) on the CLIP image encoder: ID + triplet, phase 2 only."""

    method = "bot"
    phases = (2,)

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise ValueError("bot has no phase 1")


class ClipReID(ReIDModel):
    """CLIP-ReID (Li et al., AAAI 2023): phase 1 learns per-identity context tokens X1..Xn with both
    encoders frozen; phase 2 fine-tunes the image encoder against all identities' prompt features."""

    method = "clipreid"
    phases = (1, 2)
    uses_identity_bank = True

    def __init__(self, config, num_classes, style_vocab, backbone):
        super().__init__(config, num_classes, style_vocab, backbone)
        n = config.clipreid_context_tokens
        self.prompt = compile_prompt(config.clipreid_template, backbone.tokenizer, {"X": n})
        self.prompt_context = nn.Parameter(torch.randn(num_classes, n, backbone.token_dim) * 0.02)

    def trains_in_phase(self, name: str, phase: int) -> bool:
        if phase == 1:
            return name == "prompt_context"
        return super().trains_in_phase(name, phase)

    def identity_text_features(self, pids: torch.Tensor) -> torch.Tensor:
        return encode_prompt(self.backbone, self.prompt, {"X": self.prompt_context[pids]})

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        pids = batch_pids(batch, self.num_classes)
        with torch.no_grad():
            image = F.normalize(self.backbone.encode_image(batch["pixel_values"]), dim=-1)
        text = F.normalize(self.identity_text_features(pids), dim=-1)
        return {
            "prompt": losses.symmetric_supervised_contrastive(image, text, pids, self.temperature("prompt"))
        }

    @torch.no_grad()
    def build_identity_bank(self, batches: Iterable[Batch] = (), chunk: int = 256) -> None:
        """Text features of every identity's learned prompt (no data needed: `batches` is ignored)."""
        rows = []
        for start in range(0, self.num_classes, chunk):
            pids = torch.arange(
                start, min(start + chunk, self.num_classes), device=self.prompt_context.device
            )
            rows.append(self.identity_text_features(pids))
        features = torch.cat(rows)
        self.set_identity_bank(features, torch.ones(self.num_classes, device=features.device))

    def set_phase(self, phase: int) -> None:
        super().set_phase(phase)
        if phase == 2:
            self.build_identity_bank()


class PDM(ReIDModel):
    """Prompt-driven Disentanglement Mechanism (DPPP, arXiv 2511.05092).

    Phase 1 (encoders frozen): two textual inversion networks turn the image embedding into a style word
    S and a content word C. "a [S] style photo of a [C] person" must match its image (InfoNCE); the
    style-free "a photo of a [C] person" must match every image of the same identity, whatever its style
    (supervised contrastive); S must predict the view's style attributes; S and C are decorrelated.
    Phase 2 (text side frozen): the image encoder learns ID + triplet + image-to-text CE against each
    identity's content-prompt feature, pulling it toward style-free content.
    """

    method = "pdm"
    phases = (1, 2)
    uses_identity_bank = True

    def __init__(self, config, num_classes, style_vocab, backbone):
        super().__init__(config, num_classes, style_vocab, backbone)
        missing = [a for a in config.style_attributes if a not in style_vocab]
        if missing:
            raise ConfigError(
                f"style attributes {missing} have no vocabulary (the data gives {sorted(style_vocab)})",
                path="train.model.style_attributes",
            )
        image_dim, token_dim = backbone.embed_dim, backbone.token_dim
        hidden, dropout = config.inversion_hidden_dim or token_dim, config.inversion_dropout
        self.style_inversion = TextualInversion(image_dim, token_dim, hidden, dropout)
        self.content_inversion = TextualInversion(image_dim, token_dim, hidden, dropout)
        self.style_heads = nn.ModuleDict(
            {name: nn.Linear(token_dim, style_vocab[name]) for name in config.style_attributes}
        )
        if config.weights.adversarial > 0:
            # The adversary: style heads on C, which C's inversion network learns to defeat (gradient reversal).
            self.adversarial_heads = nn.ModuleDict(
                {name: nn.Linear(token_dim, style_vocab[name]) for name in config.style_attributes}
            )
        if config.weights.style_i2t > 0:
            # Each identity's mean content word (phase 2's style-conditioned prompts need a word, not a feature).
            self.register_buffer("identity_words", torch.zeros(num_classes, token_dim))
        with (
            torch.no_grad()
        ):  # the mean norm of the (frozen) real words: what `word_norm` holds the pseudo-words to
            self.token_norm = float(backbone.token_embedding.weight.norm(dim=-1).mean())
        self.full_prompt = compile_prompt(config.full_template, backbone.tokenizer)
        self.content_prompt = compile_prompt(config.content_template, backbone.tokenizer)

    def trains_in_phase(self, name: str, phase: int) -> bool:
        if phase == 1:
            return name.startswith(
                ("style_inversion.", "content_inversion.", "style_heads.", "adversarial_heads.")
            )
        return super().trains_in_phase(name, phase)

    def pseudo_words(self, image_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, C) token embeddings [B, token_dim] of image embeddings [B, embed_dim]."""
        return self.style_inversion(image_embedding), self.content_inversion(image_embedding)

    def prompt_features(
        self, style: torch.Tensor, content: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(full-prompt, content-prompt) text features [B, embed_dim] of pseudo-words S and C."""
        full = encode_prompt(self.backbone, self.full_prompt, {"S": style, "C": content})
        return full, encode_prompt(self.backbone, self.content_prompt, {"C": content})

    def phase1_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        pids = batch_pids(batch, self.num_classes)
        config = self.config
        with torch.no_grad():
            image = self.backbone.encode_image(batch["pixel_values"])
        style, content = self.pseudo_words(image)
        full_text, content_text = self.prompt_features(style, content)
        image = F.normalize(image, dim=-1)
        parts = {
            "align": losses.info_nce(image, F.normalize(full_text, dim=-1), self.temperature("align")),
            "content": losses.symmetric_supervised_contrastive(
                image, F.normalize(content_text, dim=-1), pids, self.temperature("content")
            ),
        }
        if config.style_attributes:
            labels = batch_style(batch, self.style_vocab, config.style_attributes)
            parts["style"] = sum(
                F.cross_entropy(self.style_heads[name](style), labels[name])
                for name in config.style_attributes
            ) / len(config.style_attributes)
        parts["decorrelation"] = losses.squared_cosine(style, content)
        if config.weights.adversarial > 0 and config.style_attributes:
            reversed_content = losses.gradient_reversal(content)
            parts["adversarial"] = sum(
                F.cross_entropy(self.adversarial_heads[name](reversed_content), labels[name])
                for name in config.style_attributes
            ) / len(config.style_attributes)
        if config.weights.word_norm > 0:
            parts["word_norm"] = losses.norm_deviation(torch.cat([style, content]), self.token_norm)
        return parts

    def phase2_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        parts = super().phase2_losses(batch)
        if self.config.weights.style_i2t > 0:
            parts["style_i2t"] = self.style_conditioned_i2t(
                self._phase2_feature, batch_pids(batch, self.num_classes)
            )
        return parts

    def style_conditioned_i2t(self, feature: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """CE of each image against "a [S_i] style photo of a [C_k] person" for every identity k of the batch,
        S_i the image's own style word, C_k identity k's mean content word: with the style fixed to the
        image's own, only the identity can tell the prompts apart. The text side is frozen, so the prompts
        are constants; the gradient reaches the image feature only."""
        batch_ids = pids.unique()
        with torch.no_grad():
            style = self.style_inversion(feature.detach())
            words = self.identity_words[batch_ids]
            n, k = len(feature), len(batch_ids)
            text = encode_prompt(
                self.backbone, self.full_prompt, {"S": style.repeat_interleave(k, 0), "C": words.repeat(n, 1)}
            )
            text = F.normalize(text, dim=-1).reshape(n, k, -1)
        logits = torch.einsum("nd,nkd->nk", F.normalize(feature, dim=-1), text) / self.temperature("i2t")
        target = (pids[:, None] == batch_ids[None, :]).float().argmax(dim=1)
        return F.cross_entropy(logits, target)

    def set_identity_words(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Each identity's mean content word from per-identity sums [K, token_dim] and counts [K]."""
        if hasattr(self, "identity_words"):
            self.identity_words.copy_(sums / counts.clamp(min=1)[:, None].to(sums.dtype))

    @torch.no_grad()
    def phase1_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(S [B, token_dim], C [B, token_dim], normalised content-prompt features [B, D]), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            style, content = self.pseudo_words(self.backbone.encode_image(pixel_values))
            text = F.normalize(encode_prompt(self.backbone, self.content_prompt, {"C": content}), dim=-1)
        finally:
            self.train(was_training)
        return style, content, text

    @torch.no_grad()
    def content_feature_sums(
        self, pixel_values: torch.Tensor, pids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-identity sums [K, D] of normalised content-prompt features of these images, and counts [K]."""
        return self.identity_sums(self.phase1_features(pixel_values)[2], pids)

    def identity_sums(self, text: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sums = torch.zeros(self.num_classes, text.shape[1], device=text.device, dtype=text.dtype)
        sums.index_add_(0, pids, text)
        return sums, torch.bincount(pids, minlength=self.num_classes).to(text.device)

    @torch.no_grad()
    def build_identity_bank(self, batches: Iterable[Batch]) -> None:
        """Each identity's phase-2 target: the mean content-prompt feature over its images in `batches`
        (one pass over the training set, after phase 1). Distributed loops can instead all-reduce
        `content_feature_sums` and call `set_identity_bank`."""
        sums = counts = words = None
        for batch in batches:
            pids = batch_pids(batch, self.num_classes)
            _, content, text = self.phase1_features(batch["pixel_values"])
            s, c = self.identity_sums(text, pids)
            w, _ = self.identity_sums(content, pids)
            sums, counts, words = (s, c, w) if sums is None else (sums + s, counts + c, words + w)
        if sums is None:
            raise DataError("cannot build the PDM identity bank from no images")
        self.set_identity_bank(sums, counts)
        self.set_identity_words(words, counts)


METHODS: dict[str, type[ReIDModel]] = {"bot": BoT, "clipreid": ClipReID, "pdm": PDM}


def build_model(
    config: ModelConfig, num_classes: int, style_vocab: Mapping[str, int] | None = None
) -> ReIDModel:
    """The configured method on its CLIP backbone, in its first phase. `num_classes`: training identities
    (pids mapped to 0..num_classes-1); `style_vocab`: style attribute -> number of classes (pdm)."""
    if num_classes < 2:
        raise DataError(f"training needs at least 2 identities, got {num_classes}")
    cls = METHODS[config.method]
    tokens = []
    if cls is PDM:
        tokens = placeholder_tokens("S") + placeholder_tokens("C")
    elif cls is ClipReID:
        tokens = placeholder_tokens("X", config.clipreid_context_tokens)
    backbone = load_backbone(config, tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed + 1)
        model = cls(config, num_classes, style_vocab or {}, backbone)
    model.set_phase(model.phases[0])
    return model


def batch_pids(batch: Batch, num_classes: int) -> torch.Tensor:
    pids = batch["pids"]
    if pids.dtype != torch.long or pids.dim() != 1:
        raise ValueError(f"batch['pids'] must be a 1-D long tensor, got {pids.dtype} {tuple(pids.shape)}")
    if len(pids) and (int(pids.min()) < 0 or int(pids.max()) >= num_classes):
        raise ValueError(
            f"batch['pids'] must lie in 0..{num_classes - 1}, got {int(pids.min())}..{int(pids.max())}"
        )
    return pids


def batch_style(batch: Batch, vocab: Mapping[str, int], names: Iterable[str]) -> dict[str, torch.Tensor]:
    style = batch.get("style") or {}
    labels = {}
    for name in names:
        if name not in style:
            raise ValueError(f"batch['style'] lacks {name!r} (pdm style supervision needs {list(names)})")
        values = style[name]
        if len(values) and (int(values.min()) < 0 or int(values.max()) >= vocab[name]):
            raise ValueError(f"batch['style'][{name!r}] must lie in 0..{vocab[name] - 1}")
        labels[name] = values
    return labels
