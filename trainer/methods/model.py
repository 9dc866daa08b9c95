"""The shared part of every Re-ID method (`ReIDModel`) and the factory `build_model(config, num_classes,
style_vocab)` that builds the configured one from its registry entry (trainer/methods/registry.py).

Every method shares the CLIP backbone and the Re-ID head (BNNeck + bias-free ID classifier) and the
phase-2 objective (ID + triplet, plus image-to-text for the prompt methods); they differ in phase 1,
each in its own module:

    method     phases  phase 1 trains               phase-2 text targets (identity bank)
    bot        2       -                            none (ID + triplet only)         methods/bot.py
    clipreid   1, 2    per-identity context tokens  "a photo of a X1..X4 person"     methods/clipreid.py
                                                    per identity
    pdm        1, 2    style/content inversion      mean content prompt "a photo     methods/pdm.py
                       networks + style heads       of a [C] person" over each
                                                    identity's images

The training loop drives a model through: `set_phase(p)` (freezes exactly the parameters that phase must
not change), `parameter_groups(weight_decay, backbone_lr_scale)`, `batch_style_attributes(p)`, `prepare_phase(p, run)`
(the work between two phases, before `set_phase`), `loss(batch) -> (total, {name: value})`, `monitored`,
and `encode_images(x)` for retrieval. Exact losses, weights and schedules: docs/method.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from dppp.foundation.errors import DataError
from dppp.trainer.clip.backbone import VISION_PREFIXES, ClipBackbone, load_backbone
from dppp.trainer.methods import losses
from dppp.trainer.methods.config import ModelConfig
from dppp.trainer.methods.registry import MethodSpec, PhaseRun, method_spec

Batch = Mapping[str, object]


class ReIDModel(nn.Module):
    """The shared part: backbone, BNNeck (Luo et al. 2019), ID classifier, phase switching, phase 2."""

    method = ""  # its registry name; the entry declares phases, losses, weights and style-label phases
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

    @classmethod
    def prompt_tokens(cls, config: ModelConfig) -> list[str]:
        """Placeholder tokens the tokenizer must know (added before any parameter is created)."""
        return []

    @property
    def spec(self) -> MethodSpec:
        return method_spec(self.method)

    @property
    def phases(self) -> tuple[int, ...]:
        return self.spec.phases

    @property
    def monitored(self) -> tuple[str, ...]:
        return self.spec.monitored

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

    def parameter_groups(self, weight_decay: float, backbone_lr_scale: float = 1.0) -> list:
        """What the phase's AdamW optimises (the phase's `weight_decay` applies to all of it): the trainable
        parameters as one plain list, or, with a `backbone_lr_scale` other than 1, two groups, the
        pretrained tower's ("backbone.") and the rest, each with the "lr_scale" the training loop
        multiplies the phase's lr by (a group with nothing trainable left out)."""
        if backbone_lr_scale == 1.0:
            return self.trainable_parameters()  # as before the option: the same optimizer, bit for bit
        tower, heads = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (tower if name.startswith("backbone.") else heads).append(param)
        groups = [{"params": tower, "lr_scale": backbone_lr_scale}, {"params": heads, "lr_scale": 1.0}]
        return [group for group in groups if group["params"]]

    def batch_style_attributes(self, phase: int) -> tuple[str, ...]:
        """The style labels this phase's batches must carry (`batch["style"]`)."""
        return self.config.style_attributes if phase in self.spec.style_label_phases else ()

    def prepare_phase(self, phase: int, run: PhaseRun) -> None:
        """The work before `set_phase(phase)` in a training run (e.g. a pass over the data); none here."""

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
        """(weighted total, {name: unweighted loss, detached}) of the current phase on one batch; the
        method's `monitored` parts are figures, left out of the total."""
        if self.phase not in self.phases:
            raise RuntimeError("call set_phase() before loss()")
        parts = self.phase1_losses(batch) if self.phase == 1 else self.phase2_losses(batch)
        undeclared = sorted(set(parts) - set(self.spec.losses[self.phase]))
        if undeclared:
            raise RuntimeError(f"{self.method}: losses {undeclared} are not in its registry entry")
        weights, monitored = self.config.weights, self.monitored
        total = sum(getattr(weights, name) * value for name, value in parts.items() if name not in monitored)
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


def build_model(
    config: ModelConfig, num_classes: int, style_vocab: Mapping[str, int] | None = None
) -> ReIDModel:
    """The configured method on its CLIP backbone, in its first phase. `num_classes`: training identities
    (pids mapped to 0..num_classes-1); `style_vocab`: style attribute -> number of classes (pdm)."""
    if num_classes < 2:
        raise DataError(f"training needs at least 2 identities, got {num_classes}")
    cls = method_spec(config.method).model_class()
    backbone = load_backbone(config, cls.prompt_tokens(config))
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
