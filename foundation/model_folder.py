"""Writing a model folder (a diffusers pipeline, a CLIP and its tokenizer) all or nothing.

The folder is filled next to its destination under a temporary name and renamed into place at the end,
so an interrupted build never leaves a half-written model that a later load would half-read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def replacing_folder(out_dir: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `out_dir` to fill; when the block ends it replaces `out_dir` whole, and when
    the block fails it is removed. Refuses up front what `check_destination` refuses."""
    out = check_destination(out_dir, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
