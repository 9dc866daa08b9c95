"""The wheel, installed into a fresh environment beside a package named `trainer`, runs the whole CLI from
outside the repository: everything installs under `dppp` (setup.py), so no top-level name of ours can
shadow another package's, and what the product reads at run time ships inside the package.

The fresh venv gets the dependencies through a .pth line naming this interpreter's site-packages: a plain
path line does not run that folder's own .pth files, so the editable install's finder (which would import
the repository's folders) stays out, and the wheel is the only dppp the venv can import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "dppp": "dppp",
    "foundation": "dppp/foundation",
    "dataset": "dppp/dataset",
    "prompts": "dppp/prompts",
}
PACKAGES |= {"pipeline": "dppp/pipeline", "trainer": "dppp/trainer"}  # folder -> its path in the wheel
BUILD_FILES = ["setup.py", "pyproject.toml", "README.md"]
STUB_MARKER = "the other trainer package"
EXPERIMENT = {
    "generate": {
        "out": "ds",
        "identities": 8,
        "ids_per_shard": 4,
        "workers": 1,
        "prompts": {"views": {"distribution": "poisson", "mean": 4, "min": 2, "max": 4}},
        "renderer": {"kind": "procedural"},
        "output": {"height": 64, "width": 32, "format": "jpg", "quality": 90},
    },
    "train": {  # tests/trainer/test_train.py's tiny run: a randomly initialised tiny CLIP, no model files
        "model": {
            "method": "pdm",
            "image_size": [64, 32],
            "tiny": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 4,
                "patch_size": 8,
                "projection_dim": 32,
            },
            "inversion_hidden_dim": 32,
        },
        "phase1": {"epochs": 1, "lr": 1e-3},
        "phase2": {"epochs": 1, "lr": 1e-3, "warmup_epochs": 0},
        "data": {
            "sources": ["ds"],
            "ids_per_batch": 4,
            "images_per_id": 2,
            "num_workers": 0,
            "pool_identities": 4,
        },
        "out": "train",
        "run_name": "wheel",
        "workers": 1,
        "log_every_steps": 2,
    },
}


def package_data() -> set[str]:
    """Every file of the product's folders that is not Python source, as its path in the wheel: what the
    product reads from its own package at run time (prompts/taxonomy.yaml)."""
    found = set()
    for folder, target in PACKAGES.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts:
                found.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return found


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the build's own folders (build/, *.egg-info) never land in the
    checkout; offline, with the setuptools already installed."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["-w", str(dist), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("dppp-*.whl")
    return wheel


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, (
        f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.slow
def test_the_wheel_installs_under_dppp_and_runs_generate_and_train_outside_the_repository(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"dppp"}  # no top-level trainer, ...
    assert "dppp/prompts/taxonomy.yaml" in names and package_data() <= names
    assert {f"dppp/{folder}/__init__.py" for folder in PACKAGES if folder != "dppp"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "trainer").mkdir()
    (site / "trainer" / "__init__.py").write_text(f"MARKER = {STUB_MARKER!r}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )

    work = tmp_path / "work"  # outside the repository: nothing may be found relative to the checkout
    work.mkdir()
    (work / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "RAY_ADDRESS"}}
    dppp = str(venv / "bin" / "dppp")

    assert "generate" in run([dppp, "--help"], work, env).stdout
    run([dppp, "generate", "exp.yaml"], work, env)
    assert len(list((work / "ds" / "shards").glob("shard-*.tar"))) == 2  # 8 identities, 4 per shard
    assert (work / "ds" / "dataset.json").is_file() and (work / "ds" / "index.parquet").is_file()
    run([dppp, "train", "exp.yaml"], work, env)
    assert (work / "train" / "wheel" / "final").is_dir()

    probe = (
        "import trainer, dppp, dppp.trainer, dppp.prompts.taxonomy as t; "
        "print(trainer.MARKER); print(dppp.__file__); print(dppp.trainer.__file__); print(t.SHIPPED_TAXONOMY)"
    )
    marker, *files = run([str(python), "-c", probe], work, env).stdout.splitlines()
    assert marker == STUB_MARKER  # the other `trainer` is untouched, and still what `import trainer` finds
    for file in files:
        assert Path(file).resolve().is_relative_to(site.resolve()), f"{file} is not the installed wheel's"
        assert not Path(file).resolve().is_relative_to(ROOT)
