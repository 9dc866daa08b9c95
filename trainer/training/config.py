"""Stage-2 config: the `train` section (the model issue fills `model`, the training issue the rest)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dppp.foundation.schema import StrictModel
from dppp.trainer.data.config import DataConfig
from dppp.trainer.evaluation.config import EvalConfig
from dppp.trainer.methods.config import ModelConfig


# What trains in each phase is fixed by the method (docs/method.md); these say how fast and how long.
# Defaults follow CLIP-ReID (Li et al., AAAI 2023): phase 1 learns only small prompt-side modules, so a
# high lr; phase 2 fine-tunes the pretrained image encoder, so a low lr with a linear warm-up.
class Phase1Schedule(StrictModel):
    epochs: int = Field(120, ge=0)
    lr: float = Field(3.5e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    # Phase 1 reads un-augmented images, as CLIP-ReID's stage 1 does (it caches features of plain images):
    # the image encoder is frozen, and random erasing would hide what the prompt words must describe.
    augment: bool = False


class Phase2Schedule(StrictModel):
    epochs: int = Field(60, ge=0)
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(10, ge=0)
    # The pretrained tower ("backbone." parameters) trains at lr x this, the new heads at lr: CLIP-ReID and
    # robust fine-tuning keep a pretrained CLIP's updates far smaller than those of freshly initialised
    # layers, which would otherwise pull the tower away from what pretraining learned. 1 = one rate.
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)
    # WiSE-FT (Wortsman et al., CVPR 2022): final/ gets backbone = alpha x fine-tuned + (1 - alpha) x the
    # weights the run started from (heads as trained; epoch checkpoints stay raw, so resume is unchanged).
    # The interpolation keeps the pretrained model's robustness off the training distribution. 1 = off.
    wise_alpha: float = Field(1.0, ge=0, le=1)


class RunSettings(StrictModel):
    """What every Ray Train run shares (`dppp train`, `dppp pretrain`): its data, where it lives, its
    workers, checkpoints and logs. trainer/training/train.py launches it, trainer/training/loop.py runs it."""

    data: DataConfig = DataConfig()
    # The run: <out>/<run_name>/ holds checkpoints, metrics and final/; a rerun with the same name resumes.
    out: str = "runs/demo/train"
    run_name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    seed: int = Field(0, ge=0)  # shard order, batch composition and augmentation
    workers: int = Field(1, ge=1)  # Ray Train workers (one process each; DDP between them)
    use_gpu: bool = False  # one GPU per worker, NCCL; else gloo on CPU
    cpus_per_worker: float = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"  # applies on GPU only
    lr_floor: float = Field(0.01, ge=0, le=1)  # cosine decay ends at lr x lr_floor
    checkpoint_every_steps: int | None = Field(None, ge=1)  # besides every epoch end
    checkpoint_keep: int = Field(3, ge=1)  # the latest K checkpoints are kept
    max_failures: int = Field(3, ge=0)  # worker-group restarts (from the last checkpoint) before giving up
    # How long one start of the worker group may wait for the cluster to place every worker (at the
    # start, or after a node hosting one died). A start that times out is tried once more, then the run
    # stops with exit 1, its checkpoints kept. Raise it where an autoscaler takes longer to add a node.
    placement_timeout_s: float = Field(300.0, gt=0)
    log_every_steps: int = Field(10, ge=1)


class TrainEvalConfig(StrictModel):
    """Held-out evaluation during training (trainer/training/held_out.py): every `every_epochs` epochs of the
    method's last phase (the one that trains the image encoder) and at its end, rank 0 ranks each dataset
    with `dppp eval`'s protocol; results go to metrics.jsonl ("kind": "eval"), TensorBoard and the curves.
    Each dppp dataset must hold none of the training data's people (checked before Ray starts)."""

    datasets: tuple[str, ...] = ()  # NAME:PATH, as `dppp eval --dataset` (synthetic:URL for dppp datasets)
    every_epochs: int = Field(1, ge=1)
    protocol: EvalConfig = EvalConfig()  # metric, flip, batch size, synthetic split ("datasets" unused)

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, specs: tuple[str, ...]) -> tuple[str, ...]:
        return EvalConfig._known_datasets(specs)


class TrainConfig(RunSettings):
    model: ModelConfig = ModelConfig()
    phase1: Phase1Schedule = Phase1Schedule()
    phase2: Phase2Schedule = Phase2Schedule()
    bank_batch_size: int = Field(64, ge=1)  # PDM identity bank pass between the phases
    eval: TrainEvalConfig = TrainEvalConfig()
