"""How every command writes a size: binary units (B, KiB, MiB, GiB, TiB), as `shards ls` always did."""

from __future__ import annotations


def format_bytes(n: float | None) -> str:
    """'512 B', '1.5 KiB', '3.2 GiB'; '-' for an unknown size."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
