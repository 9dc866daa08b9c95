"""Saving a diffusers pipeline into a folder that `AutoPipelineForText2Image.from_pretrained` loads.

Shared by the offline model builders (tiny, SD1.5-shaped): the folder is written next to its
destination under a temporary name and renamed into place at the end, so an interrupted build never
leaves a half-written pipeline behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dppp.foundation.errors import SettingError, UserError


def check_destination(out_dir: str | Path, *, overwrite: bool) -> Path:
    """Refuse a file, or a non-empty folder unless `overwrite`, before any expensive build starts."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SettingError("overwrite", f"{out} already exists and is not empty (set this to replace it)")
    return out


def save_pipeline_folder(pipe, out_dir: str | Path, *, overwrite: bool) -> Path:
    """`save_pretrained` (safetensors) into `out_dir` atomically; returns the folder."""
    out = check_destination(out_dir, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
