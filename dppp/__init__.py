"""dppp: privacy-preserving synthetic person re-identification (DPPP, arXiv 2511.05092).

Installed, the stages are this package's subpackages (setup.py maps the repository's top-level folders
foundation/, dataset/, prompts/, pipeline/ and trainer/ under `dppp`). In a source checkout the same names
resolve to that checkout's folders, so a second checkout (a git worktree) on PYTHONPATH runs its own code
rather than whichever checkout the editable install points at.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "setup.py").is_file() and (_checkout / "trainer" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's __path__ exists at import)

from dppp.foundation import __version__  # noqa: E402 (after __path__ is complete)

__all__ = ["__version__"]
