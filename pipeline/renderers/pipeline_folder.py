"""Saving a diffusers pipeline into a folder that `AutoPipelineForText2Image.from_pretrained` loads, all or
nothing (foundation/model_folder.py): shared by the offline model builders (tiny, SD1.5-shaped)."""

from __future__ import annotations

from pathlib import Path

from dppp.foundation.model_folder import replacing_folder


def save_pipeline_folder(pipe, out_dir: str | Path, *, overwrite: bool) -> Path:
    """`save_pretrained` (safetensors) into `out_dir` atomically; returns the folder."""
    with replacing_folder(out_dir, overwrite=overwrite) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return Path(out_dir)
