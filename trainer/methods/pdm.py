"""PDM, the paper's method: style/content pseudo-words in phase 1, content-prompt targets in phase 2."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from dppp.foundation.errors import ConfigError, DataError
from dppp.trainer.data.loader import make_loader
from dppp.trainer.data.streams import AllImagesStream
from dppp.trainer.methods import losses
from dppp.trainer.methods.config import ModelConfig
from dppp.trainer.methods.health import MAX_HEALTH_IMAGES, flat_metrics, format_report, health_report
from dppp.trainer.methods.inversion import TextualInversion
from dppp.trainer.methods.model import Batch, ReIDModel, batch_pids, batch_style
from dppp.trainer.methods.registry import PhaseRun
from dppp.trainer.methods.text_prompts import compile_prompt, encode_prompt, placeholder_tokens


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
    uses_identity_bank = True

    @classmethod
    def prompt_tokens(cls, config: ModelConfig) -> list[str]:
        return placeholder_tokens("S") + placeholder_tokens("C")

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

    def prepare_phase(self, phase: int, run: PhaseRun) -> None:
        """Before phase 2 of a run: the identity bank from one un-augmented pass over the data (each rank
        its own units, sums all-reduced), then the phase-1 health report from a sample of that pass."""
        if phase != 2:
            return

        stream = AllImagesStream(
            run.data,
            run.config.model.image_size,
            rank=run.rank,
            world=run.world,
            batch_size=run.config.bank_batch_size,
            style_attributes=run.config.model.style_attributes,
        )
        sums = torch.zeros(self.num_classes, self.identity_text.shape[1], device=run.device)
        words = torch.zeros(self.num_classes, self.backbone.token_dim, device=run.device)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=run.device)
        sample: dict[str, list] = {"S": [], "C": [], "text": [], "pids": [], "style": []}
        for batch in make_loader(stream, run.config.data, pin_memory=run.cuda):
            pids = batch["pids"].to(run.device)
            style, content, text = self.phase1_features(batch["pixel_values"].to(run.device))
            s, c = self.identity_sums(text, pids)
            sums += s.to(sums.dtype)
            words += self.identity_sums(content, pids)[0].to(words.dtype)
            counts += c
            if sum(len(p) for p in sample["pids"]) < MAX_HEALTH_IMAGES:
                for key, value in (("S", style), ("C", content), ("text", text)):
                    sample[key].append(value.float().cpu())
                sample["pids"].append(pids.cpu())
                sample["style"].append({n: v.cpu() for n, v in batch.get("style", {}).items()})
        if run.world > 1 and dist.is_initialized():
            for total in (sums, words, counts):
                dist.all_reduce(total)
        self.set_identity_bank(sums, counts)
        self.set_identity_words(words, counts)
        report_health(sample, run)


def report_health(sample: dict[str, list], run: PhaseRun) -> None:
    """PDM's phase-1 health report (trainer/methods/health.py) from every rank's sample of the bank pass:
    gathered on rank 0, printed, written to metrics.jsonl and posted for the run summary."""
    if run.world > 1 and dist.is_initialized():
        gathered: list = [None] * run.world
        dist.all_gather_object(gathered, sample)
    else:
        gathered = [sample]
    if run.rank != 0:
        return
    parts = {key: [t for g in gathered for t in g[key]] for key in sample}
    if not parts["pids"]:
        return
    names = run.config.model.style_attributes
    last = run.last_epoch()
    report = health_report(
        content_loss=last.get("loss/content"),
        style_loss=last.get("loss/style"),
        batch_size=run.config.data.ids_per_batch * run.config.data.images_per_id,
        style=torch.cat(parts["S"]),
        content=torch.cat(parts["C"]),
        content_text=torch.cat(parts["text"]),
        pids=torch.cat(parts["pids"]),
        style_labels={n: torch.cat([s[n] for s in parts["style"]]) for n in names},
    )
    print(format_report(report), flush=True)
    run.record({"kind": "health", "step": run.step, **flat_metrics(report), "probes": report["probes"]})
