"""dppp: privacy-preserving synthetic person re-identification (DPPP, arXiv 2511.05092)."""

__version__ = "0.1.0"
