"""Installs the repository's top-level folders under one `dppp` namespace: `trainer/` is `dppp.trainer`
once installed, so dppp never claims a top-level name another package owns (PyPI's `trainer`, `pipeline`,
`prompts`, `foundation` and `dataset` all exist). The metadata lives in pyproject.toml; only the folder ->
package mapping, which pyproject's static tables cannot compute, is here."""

from setuptools import find_packages, setup

FOLDERS = ["foundation", "dataset", "prompts", "pipeline", "trainer"]

packages = find_packages(include=["dppp", "dppp.*"])
for folder in FOLDERS:
    packages += [f"dppp.{name}" for name in find_packages(include=[folder, f"{folder}.*"])]

setup(
    package_dir={"dppp": "dppp", **{f"dppp.{folder}": folder for folder in FOLDERS}},
    packages=packages,
    package_data={"dppp.prompts": ["*.yaml"]},
)
