"""PDM's phase-1 health report: did the pseudo-words learn what phase 2 relies on?

Computed once, between the phases, from the same un-augmented pass over the training images that builds
the identity bank (trainer/training/loop.py), and written to metrics.jsonl (kind "health"), the run summary
and the console. What it says, and why each figure:

- content loss (last phase-1 epoch) against its chance level ln(P*K): at chance, the content prompt
  "a photo of a [C] person" matches no particular image.
- style loss against the label-prior entropy (mean over the style attributes of H(prior)): a style head
  that only learned the label frequencies sits at that entropy.
- content-prompt cosine within vs across identities (per image, normalised text features of its content
  prompt): phase 2 pulls each image toward its identity's mean content prompt at temperature tau (0.01 for
  OpenAI's CLIPs, ~0.02 for the project's tiny one), so a within-across gap g gives a logit margin of about
  g / tau. A gap under `MIN_COSINE_GAP` (a margin under 1 at 0.01) leaves the image-to-text term a constant.
- linear probes of S and of C, for each style attribute and for pid, fit on half of each identity's
  images and scored on the other half ("held-out"): S should read the style attributes, C the pid; C
  reading style as well as S does is what the adversarial option fights (docs/method.md).

`warning` is set when the content word carries no identity: content loss >= `MAX_CONTENT_CHANCE_RATIO` of
its chance level, or the within-across gap under `MIN_COSINE_GAP`. Phase 2 then adds nothing to bot.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

MAX_CONTENT_CHANCE_RATIO = 0.9
MIN_COSINE_GAP = 0.01
MAX_HEALTH_IMAGES = 4096  # per rank: the probes need a sample, not the whole of a large dataset


def prior_entropy(labels: torch.Tensor) -> float:
    counts = torch.bincount(labels).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def probe_split(pids: torch.Tensor) -> torch.Tensor:
    """True for the images a probe is fit on: every other image of each identity (in pass order), so both
    halves hold every identity with two images or more."""
    fit = torch.zeros(len(pids), dtype=torch.bool)
    seen: dict[int, int] = {}
    for i, pid in enumerate(pids.tolist()):
        fit[i] = seen.get(pid, 0) % 2 == 0
        seen[pid] = seen.get(pid, 0) + 1
    return fit


def linear_probe(
    features: torch.Tensor, labels: torch.Tensor, fit: torch.Tensor, *, steps: int = 100, l2: float = 1e-3
) -> dict[str, float]:
    """Multinomial logistic regression on standardised features, fit on `fit`, scored on the rest:
    {"accuracy", "chance"}, chance = always the most frequent label of the fit half."""
    test = ~fit
    if fit.sum() == 0 or test.sum() == 0:
        return {"accuracy": math.nan, "chance": math.nan}
    x = features.double()
    mean, std = x[fit].mean(0), x[fit].std(0).clamp(min=1e-6)
    x = (x - mean) / std
    classes = int(labels.max()) + 1
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x[fit] @ weight + bias, labels[fit]) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        accuracy = float(((x[test] @ weight + bias).argmax(1) == labels[test]).double().mean())
    majority = torch.bincount(labels[fit], minlength=classes).argmax()
    return {"accuracy": accuracy, "chance": float((labels[test] == majority).double().mean())}


def cosine_within_across(text: torch.Tensor, pids: torch.Tensor) -> tuple[float, float]:
    """Mean cosine of normalised features between two images of one identity, and of two identities."""
    text = F.normalize(text.double(), dim=-1)
    similarity = text @ text.t()
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool)
    within = similarity[same & ~eye]
    across = similarity[~same]
    return (
        float(within.mean()) if len(within) else math.nan,
        float(across.mean()) if len(across) else math.nan,
    )


def health_report(
    *,
    content_loss: float | None,
    style_loss: float | None,
    batch_size: int,
    style: torch.Tensor,
    content: torch.Tensor,
    content_text: torch.Tensor,
    pids: torch.Tensor,
    style_labels: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """The report from the per-image pseudo-words S [N, d], C [N, d], content-prompt features [N, D],
    pids [N] and style labels {attribute: [N]}, and the last phase-1 epoch's mean losses."""
    chance = math.log(batch_size)
    entropy = (
        (sum(prior_entropy(v) for v in style_labels.values()) / len(style_labels)) if style_labels else None
    )
    within, across = cosine_within_across(content_text, pids)
    fit = probe_split(pids)
    probes: dict[str, dict[str, dict[str, float]]] = {"S": {}, "C": {}}
    for word, features in (("S", style), ("C", content)):
        for name, labels in [*style_labels.items(), ("pid", pids)]:
            probes[word][name] = linear_probe(features, labels, fit)
    report: dict[str, Any] = {
        "images": len(pids),
        "identities": int(pids.unique().numel()),
        "content_loss": content_loss,
        "content_chance": chance,
        "content_ratio": None if content_loss is None else content_loss / chance,
        "style_loss": style_loss,
        "style_prior_entropy": entropy,
        "style_ratio": None if style_loss is None or not entropy else style_loss / entropy,
        "cosine_within": within,
        "cosine_across": across,
        "cosine_gap": within - across,
        "probes": probes,
    }
    reasons = []
    if report["content_ratio"] is not None and report["content_ratio"] >= MAX_CONTENT_CHANCE_RATIO:
        reasons.append(
            f"content loss {content_loss:.3f} is {report['content_ratio']:.2f} x its chance level "
            f"ln(P*K) = {chance:.3f}"
        )
    if not report["cosine_gap"] >= MIN_COSINE_GAP:
        reasons.append(
            f"content prompts of one identity are no closer than of two (cosine {within:.4f} within vs "
            f"{across:.4f} across)"
        )
    report["warning"] = (
        (
            "the content word carries no identity: "
            + "; ".join(reasons)
            + ". Phase 2's image-to-text term will add nothing (a text tower that means something "
            "is needed: docs/pretraining.md)"
        )
        if reasons
        else None
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the console and the run summary."""

    def f(value, digits=3):
        return (
            "-"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:.{digits}f}"
        )

    lines = [
        f"phase-1 health ({report['images']} images, {report['identities']} identities):",
        f"  content loss {f(report['content_loss'])} vs chance ln(P*K) {f(report['content_chance'])} "
        f"(ratio {f(report['content_ratio'], 2)})",
        f"  style loss {f(report['style_loss'])} vs label-prior entropy {f(report['style_prior_entropy'])} "
        f"(ratio {f(report['style_ratio'], 2)})",
        f"  content-prompt cosine within {f(report['cosine_within'], 4)} vs across {f(report['cosine_across'], 4)} "
        f"identities (gap {f(report['cosine_gap'], 4)})",
    ]
    names = list(report["probes"]["S"])
    lines.append(
        "  held-out linear probes (accuracy / majority): "
        + ", ".join(
            f"{n}: S {f(report['probes']['S'][n]['accuracy'], 2)} C {f(report['probes']['C'][n]['accuracy'], 2)} "
            f"/ {f(report['probes']['S'][n]['chance'], 2)}"
            for n in names
        )
    )
    if report.get("warning"):
        lines.append(f"  WARNING: {report['warning']}")
    return "\n".join(lines)


def flat_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The report as one metrics.jsonl record: nested probes flattened to probe/S/pid etc."""
    out = {k: v for k, v in report.items() if k != "probes"}
    for word, by_name in report["probes"].items():
        for name, scores in by_name.items():
            out[f"probe/{word}/{name}"] = scores["accuracy"]
            out[f"probe_chance/{name}"] = scores["chance"]
    return out
