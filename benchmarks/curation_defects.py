"""Planted defects for the curation benchmark and tests: what a diffusion model gets wrong, made on purpose.

Test-only: nothing in the product path imports this. Each defect takes a clean image (PIL RGB) and, where
it needs one, an image of another person, and returns an image of the same size:

    blank            a black frame (a safety checker's output, NaN latents)
    noise            structureless noise (a diverged sampler)
    swapped          another person's image under this person's label (identity drift between views)
    two_figures      this person and another side by side, each squeezed to half the width
    cropped          half a body: the top or bottom half stretched to the whole frame

`corrupt_dataset` copies a dppp dataset with a share of its images replaced by these, and returns which
sample got which defect: the benchmark's ground truth.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("blank", "noise", "swapped", "two_figures", "cropped")


def blank(image: Image.Image, rng: np.random.Generator, other: Image.Image) -> Image.Image:
    level = int(rng.integers(0, 12))  # black, or nearly: JPEG and some pipelines leave a faint floor
    return Image.new("RGB", image.size, (level, level, level))


def noise(image: Image.Image, rng: np.random.Generator, other: Image.Image) -> Image.Image:
    pixels = rng.integers(0, 256, size=(image.height, image.width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def swapped(image: Image.Image, rng: np.random.Generator, other: Image.Image) -> Image.Image:
    return other.resize(image.size) if other.size != image.size else other.copy()


def two_figures(image: Image.Image, rng: np.random.Generator, other: Image.Image) -> Image.Image:
    width, height = image.size
    half = max(1, width // 2)
    out = Image.new("RGB", image.size)
    first, second = (image, other) if rng.random() < 0.5 else (other, image)
    out.paste(first.resize((half, height)), (0, 0))
    out.paste(second.resize((width - half, height)), (half, 0))
    return out


def cropped(image: Image.Image, rng: np.random.Generator, other: Image.Image) -> Image.Image:
    width, height = image.size
    box = (0, 0, width, height // 2) if rng.random() < 0.5 else (0, height // 2, width, height)
    return image.crop(box).resize(image.size)


DEFECTS: dict[str, Callable[[Image.Image, np.random.Generator, Image.Image], Image.Image]] = {
    "blank": blank,
    "noise": noise,
    "swapped": swapped,
    "two_figures": two_figures,
    "cropped": cropped,
}


def _encode(image: Image.Image, ext: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if ext in ("jpg", "jpeg") else ext.upper(), quality=90)
    return buffer.getvalue()


def corrupt_dataset(src: str | Path, dst: str | Path, share: float, seed: int = 0) -> dict[str, str]:
    """Copy the local dppp dataset `src` to `dst` with `share` of its samples' images replaced by a defect
    (kinds in turn, samples chosen by `seed`); return {sample key: defect kind}.

    Tars are rewritten member by member (same names, order and headers; only the image bytes change), and
    each shard's record gets the new tar's size and sha256, so the copy is a committed, verifiable dataset.
    The "other person" of swapped and two_figures is a sample of another identity in the same shard."""
    import hashlib

    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    tars = sorted((dst / "shards").glob("shard-*.tar"))
    keys = []
    for tar in tars:
        record = json.loads(tar.with_suffix(".json").read_text())
        keys += [(tar, key) for key in record["keys"]]
    chosen = rng.choice(len(keys), size=round(share * len(keys)), replace=False)
    planted: dict[str, str] = {}
    for n, i in enumerate(sorted(chosen.tolist(), key=lambda i: rng.random())):
        planted[keys[i][1]] = KINDS[n % len(KINDS)]
    for tar in tars:
        _rewrite(tar, planted, rng)
        record_path = tar.with_suffix(".json")
        record = json.loads(record_path.read_text())
        data = tar.read_bytes()
        record["bytes"], record["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        record_path.write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
    return planted


def _rewrite(tar_path: Path, planted: dict[str, str], rng: np.random.Generator) -> None:
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    images = {
        m.name.partition(".")[0]: (m.name.partition(".")[2], data)
        for m, data in members
        if m.name.endswith((".jpg", ".png", ".webp"))
    }
    pid_of = {key: key.split("_")[0] for key in images}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as new:
        for member, data in members:
            key, _, ext = member.name.partition(".")
            if key in planted and ext in ("jpg", "png", "webp"):
                others = sorted(k for k in images if pid_of[k] != pid_of[key])
                other_key = others[int(rng.integers(len(others)))] if others else key
                with Image.open(io.BytesIO(data)) as im:
                    image = im.convert("RGB")
                with Image.open(io.BytesIO(images[other_key][1])) as im:
                    other = im.convert("RGB")
                data = _encode(DEFECTS[planted[key]](image, rng, other), ext)
                member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    tar_path.write_bytes(out.getvalue())
