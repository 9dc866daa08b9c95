"""dppp: privacy-preserving synthetic person re-identification (DPPP, arXiv 2511.05092)."""

from dppp.foundation import __version__

__all__ = ["__version__"]
