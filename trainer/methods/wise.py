"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): interpolate a fine-tuned
model's pretrained tower back towards the weights it started from. Fine-tuning a CLIP on one domain (here
rendered people) trades away some of what pretraining gave it; a point between the two often keeps most of
the in-domain gain and more of the robustness off it. `phase2.wise_alpha` applies it to a run's final/
(trainer/training/loop.py); the benchmark calls these two functions directly on any trained model.

    start = starting_backbone_state(model)       # once, before or after training
    interpolate_weights(model, start, alpha=0.5)  # backbone = 0.5 fine-tuned + 0.5 start

Only the tower's parameters that phase 2 trains are interpolated: the heads (BNNeck, classifier), prompts,
inversion networks and the identity bank have no pretrained value to go back to and keep their trained ones.
"""

from __future__ import annotations

import torch

from dppp.trainer.methods.model import ReIDModel, build_model

BACKBONE_PREFIX = "backbone."


def starting_backbone_state(model: ReIDModel) -> dict[str, torch.Tensor]:
    """The weights `model`'s run started from, for the "backbone." float parameters phase 2 trains: those
    of a freshly built model of the same config (the pretrained folder's weights, or the deterministic
    `tiny` CLIP of `init_seed`), on CPU. The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        fresh = build_model(model.config, model.classifier.out_features, model.style_vocab)
    return {
        name: param.detach().clone()
        for name, param in fresh.named_parameters()
        if name.startswith(BACKBONE_PREFIX) and param.is_floating_point() and fresh.trains_in_phase(name, 2)
    }


def interpolate_weights(model: ReIDModel, start: dict[str, torch.Tensor], alpha: float) -> None:
    """In place, for every key of `start`: parameter = alpha x parameter + (1 - alpha) x start[key]
    (alpha 1: unchanged; 0: the starting weights exactly). Every key is checked before any weight moves."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"WiSE-FT alpha must lie in [0, 1], got {alpha}")
    params = dict(model.named_parameters())
    missing = sorted(set(start) - set(params))
    if missing:
        raise ValueError(f"starting weights name parameters the model lacks: {missing[:5]}")
    for name, value in start.items():
        if value.shape != params[name].shape:
            raise ValueError(
                f"{name}: starting weights {tuple(value.shape)}, model {tuple(params[name].shape)}"
            )
    if alpha == 1.0:
        return
    with torch.no_grad():
        for name, value in start.items():
            param = params[name]
            if alpha == 0.0:
                param.copy_(value)  # exactly the start, free of rounding
            else:
                param.lerp_(value.to(device=param.device, dtype=param.dtype), 1.0 - alpha)
