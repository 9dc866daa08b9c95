"""Runtime dependencies (pyproject's `dependencies`) are exactly what product code imports: a package the
product imports but does not declare breaks a plain `pip install dppp`, one it declares but never imports
only weighs on every install (test-only packages belong in the dev extra)."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["dppp", "foundation", "dataset", "prompts", "pipeline", "trainer"]
# Declared for a module the product imports from another package: torch.utils.tensorboard needs tensorboard.
NEEDED_BY = {"torch.utils.tensorboard": "tensorboard"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {normalized(re.match(r"[A-Za-z0-9_.-]+", spec).group()) for spec in specs}


def product_imports() -> set[str]:
    """Every module name a product file imports (absolute imports; relative ones are the product's own)."""
    names = set()
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module)
    return names


def test_runtime_dependencies_are_what_product_code_imports():
    to_distribution = packages_distributions()
    imports = product_imports()
    third_party = {name.split(".")[0] for name in imports} - set(sys.stdlib_module_names) - {"dppp"}
    unknown = sorted(top for top in third_party if top not in to_distribution)
    assert not unknown, f"imported by product code but not installed: {unknown}"
    used = {normalized(dist) for top in third_party for dist in to_distribution[top]}
    used |= {dist for module, dist in NEEDED_BY.items() if module in imports}
    optional = declared("gpu")  # xformers, accelerate: found at run time when installed
    runtime = declared()
    assert sorted(used - runtime - optional) == [], "imported by product code, not a runtime dependency"
    assert sorted(runtime - used) == [], "a runtime dependency no product module imports (dev extra?)"
