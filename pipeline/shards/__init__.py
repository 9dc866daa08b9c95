"""The shard format, one module per concept: format.py (names, allow-list, object keys), writer.py (the
deterministic tar writer), reader.py (the safe streaming reader). Import from those modules; this package
re-exports nothing.
"""
