"""A storage backend registered from tests: `toy://NAME` is a folder under a root the test chooses.

It is what a real backend adds (one module, one `register_scheme` entry), kept to the smallest Storage
that is not the local one's own URL: the dataset code, the CLI and the index must work through it.
"""

from __future__ import annotations

from pathlib import Path

from dppp.foundation.errors import UserError
from dppp.foundation.storage.local import LocalStorage
from dppp.foundation.storage.urls import Scheme

ROOTS: dict[str, Path] = {}  # NAME -> the folder toy://NAME stores into (set by the test)


class ToyStorage(LocalStorage):
    def __init__(self, name: str, folder: Path):
        super().__init__(folder)
        self.url = f"toy://{name}"


def open_toy_url(rest: str, url: str, config) -> ToyStorage:
    name = rest.strip("/")
    if name not in ROOTS:
        raise UserError(f"toy storage {url!r}: no toy store named {name!r}")
    return ToyStorage(name, ROOTS[name])


SCHEME = Scheme(open_toy_url)
