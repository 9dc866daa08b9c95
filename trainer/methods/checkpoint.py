"""Model checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder:

    model.safetensors       the model's state_dict (backbone, heads, inversion networks, identity bank)
    optimizer.safetensors   optional: every tensor of the optimizer state, keyed "state.<index>.<name>"
    optimizer.json          optional: the optimizer's class, param_groups and non-tensor state
    checkpoint.json         format version, method, phase, step, class count, style vocabulary, the model
                            config, the caller's run config, and the sha256 of each file above

checkpoint.json is written last and removed first on overwrite: it is the commit marker, so a save that
dies half-way leaves no folder that loads. Loading rebuilds the model from the JSON (`build_model`), then
checks every tensor name and shape before copying; any mismatch, another method or another format
version is a DataError that says what differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from dppp.foundation.errors import DataError
from dppp.foundation.storage.base import ObjectNotFound
from dppp.foundation.storage.local import atomic_write
from dppp.trainer.methods.config import ModelConfig

# torch, safetensors and model.py (torch) are imported inside the functions that need them: loading the
# config imports this module (the checkpoint format's config models), and that must not pay for torch.

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
META_FILE = "checkpoint.json"


@dataclass(frozen=True)
class CheckpointState:
    step: int
    method: str
    phase: int
    num_classes: int
    style_vocab: dict[str, int]
    model_config: Any  # ModelConfig, or dppp.trainer.pretraining.config.PretrainModelConfig
    config: Any  # the run config recorded by the caller, as JSON data
    has_optimizer: bool


def _write_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda out: out.write(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cpu_tensors(tensors) -> dict:
    # A copy per tensor: safetensors refuses views that share storage.
    return {name: value.detach().to("cpu", copy=True).contiguous() for name, value in tensors.items()}


def flatten_optimizer_state(state_dict: dict) -> tuple[dict, dict]:
    """(tensors, JSON-able rest) of `optimizer.state_dict()`."""
    import torch

    tensors, plain = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"state": plain, "param_groups": state_dict["param_groups"]}


def save_checkpoint(directory, model, optimizer=None, *, step: int, config: Any = None) -> Path:
    """Write a checkpoint of `model` (and `optimizer`) at `step` into `directory`; `config` (a pydantic
    model or JSON-able data, e.g. the TrainConfig) is recorded for the run that resumes."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)  # uncommitted until rewritten below
    files = {}
    data = save(_cpu_tensors(model.state_dict()))
    _write_atomic(directory / MODEL_FILE, data)
    files[MODEL_FILE] = _sha256(data)
    if optimizer is not None:
        tensors, plain = flatten_optimizer_state(optimizer.state_dict())
        plain["class"] = type(optimizer).__name__
        for name, payload in (
            (OPTIMIZER_FILE, save(_cpu_tensors(tensors))),
            (OPTIMIZER_META_FILE, json.dumps(plain, indent=1, sort_keys=True).encode()),
        ):
            _write_atomic(directory / name, payload)
            files[name] = _sha256(payload)
    else:
        for name in (OPTIMIZER_FILE, OPTIMIZER_META_FILE):
            (directory / name).unlink(missing_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "method": model.method,
        "phase": model.phase,
        "step": int(step),
        "num_classes": model.num_classes,
        "style_vocab": model.style_vocab,
        "model": model.config.model_dump(mode="json"),
        "config": config.model_dump(mode="json") if isinstance(config, BaseModel) else config,
        "files": files,
    }
    _write_atomic(directory / META_FILE, json.dumps(meta, indent=1, sort_keys=True).encode())
    return directory


def read_state(directory) -> CheckpointState:
    """Validate checkpoint.json and the files it lists (sha256), without building anything."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{directory}: no {META_FILE}: not a checkpoint, or its save was interrupted")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        version = meta.get("format_version")
    except (ValueError, AttributeError):
        raise DataError(f"{meta_path}: not valid checkpoint JSON") from None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{directory}: checkpoint format version {version!r}; this dppp reads version {FORMAT_VERSION}"
        )
    try:
        model_config = _model_config_class(meta.get("method")).model_validate(meta["model"])
        state = CheckpointState(
            step=int(meta["step"]),
            method=str(meta["method"]),
            phase=int(meta["phase"]),
            num_classes=int(meta["num_classes"]),
            style_vocab={str(k): int(v) for k, v in meta["style_vocab"].items()},
            model_config=model_config,
            config=meta.get("config"),
            has_optimizer=OPTIMIZER_FILE in meta["files"],
        )
    except ValidationError as exc:
        raise DataError(
            f"{meta_path}: the recorded model config is invalid here: {exc.errors()[0]['msg']}"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{meta_path}: missing or malformed field {exc}") from None
    if model_config.method != state.method:
        raise DataError(
            f"{meta_path}: method {state.method!r} disagrees with its model config ({model_config.method!r})"
        )
    for name, digest in meta["files"].items():
        path = directory / name
        if not path.is_file() or _sha256(path.read_bytes()) != digest:
            raise DataError(f"{path}: missing or does not match the sha256 recorded in {META_FILE}")
    return state


def stored_checkpoint_problem(storage, folder: str) -> str | None:
    """Why the checkpoint in `folder` (a key prefix on `storage`, local or S3) cannot be resumed from, or
    None: its checkpoint.json and the sha256 of every file it lists, streamed (nothing is loaded)."""
    try:
        meta = json.loads(storage.read_bytes(f"{folder}/{META_FILE}"))
        files = meta["files"]
        version = meta.get("format_version")
    except ObjectNotFound:
        return f"no {META_FILE} (its save was interrupted, or the folder was emptied)"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its {META_FILE} is not valid checkpoint JSON"
    if version != FORMAT_VERSION:
        return f"checkpoint format version {version!r}; this dppp reads version {FORMAT_VERSION}"
    for name, digest in sorted(files.items()):
        if storage.stat(f"{folder}/{name}") is None:
            return f"{name} is missing"
        sha = hashlib.sha256()
        with storage.open_read(f"{folder}/{name}") as stream:
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
        if sha.hexdigest() != digest:
            return f"{name} does not match the sha256 recorded in {META_FILE} (truncated or corrupted)"
    return None


# The config class of each model that is not a Re-ID method but trains through the same loop and saves the
# same checkpoints (the pretraining CLIP): it registers here when its config module is imported, which
# every command does through the experiment config (dppp/config.py).
OTHER_MODEL_CONFIGS: dict[str, type[BaseModel]] = {}


def register_model_config(method: str, config_class: type[BaseModel]) -> None:
    OTHER_MODEL_CONFIGS[method] = config_class


def _model_config_class(method: Any) -> type[BaseModel]:
    """The config model a checkpoint's `model` validates against: a Re-ID method's, or a registered other's."""
    return OTHER_MODEL_CONFIGS.get(method, ModelConfig)


def _load_tensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: unreadable safetensors file: {exc}") from None


def _check_same_tensors(where: str, saved: dict, expected: dict) -> None:
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [
        f"{name} {tuple(saved[name].shape)} (model has {tuple(expected[name].shape)})"
        for name in sorted(set(saved) & set(expected))
        if tuple(saved[name].shape) != tuple(expected[name].shape)
    ]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:3]))
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: " + ", ".join(missing[:3]))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): " + ", ".join(unexpected[:3]))
    if problems:
        raise DataError(f"{where}: checkpoint does not fit this model: " + " | ".join(problems))


def restore_model(directory, model) -> CheckpointState:
    """Load a checkpoint's weights and phase into an existing `model` (resume): same method, same shapes."""
    directory = Path(directory)
    state = read_state(directory)
    if state.method != model.method:
        raise DataError(f"{directory}: checkpoint of method {state.method!r}, the model is {model.method!r}")
    tensors = _load_tensors(directory / MODEL_FILE)
    _check_same_tensors(str(directory / MODEL_FILE), tensors, model.state_dict())
    model.load_state_dict(tensors, strict=True)
    model.set_phase(state.phase)
    return state


def load_checkpoint(directory, *, expected_method: str | None = None):
    """(model, CheckpointState): the model rebuilt from the recorded config, weights loaded, phase set."""
    from dppp.trainer.methods.model import build_model

    state = read_state(directory)
    if not isinstance(state.model_config, ModelConfig):
        raise DataError(
            f"{directory}: a CLIP pretraining checkpoint, not a Re-ID model (the pretrained CLIP "
            "folder is its run's final/, for train.model.backbone)"
        )
    if expected_method is not None and state.method != expected_method:
        raise DataError(f"{directory}: checkpoint of method {state.method!r}, expected {expected_method!r}")
    model = build_model(state.model_config, state.num_classes, state.style_vocab)
    restore_model(directory, model)
    return model, state


def restore_optimizer(directory, optimizer) -> None:
    """Load the checkpoint's optimizer state into `optimizer`, built over the same parameters."""
    directory = Path(directory)
    if not read_state(directory).has_optimizer:
        raise DataError(f"{directory}: this checkpoint holds no optimizer state")
    try:
        plain = json.loads((directory / OPTIMIZER_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{directory / OPTIMIZER_META_FILE}: unreadable") from None
    if plain.get("class") != type(optimizer).__name__:
        raise DataError(
            f"{directory}: optimizer state of {plain.get('class')}, not {type(optimizer).__name__}"
        )
    current = optimizer.state_dict()
    groups = plain["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current["param_groups"]]:
        raise DataError(
            f"{directory}: optimizer parameter groups differ from the saved ones (other phase or model?)"
        )
    for saved_group, live_group in zip(groups, current["param_groups"], strict=True):
        for key, value in live_group.items():  # JSON turned tuples (e.g. Adam's betas) into lists
            if isinstance(value, tuple) and isinstance(saved_group.get(key), list):
                saved_group[key] = tuple(saved_group[key])
    params = {
        index: p
        for group, live in zip(groups, optimizer.param_groups, strict=True)
        for index, p in zip(group["params"], live["params"], strict=True)
    }
    state: dict[int, dict] = {}
    for key, value in _load_tensors(directory / OPTIMIZER_FILE).items():
        _, index, name = key.split(".", 2)
        param = params.get(int(index))
        if param is None or (value.dim() > 0 and value.shape != param.shape):
            raise DataError(
                f"{directory}: optimizer tensor {key} {tuple(value.shape)} does not fit the parameters"
            )
        state.setdefault(int(index), {})[name] = value
    for index, entries in plain["state"].items():
        state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
