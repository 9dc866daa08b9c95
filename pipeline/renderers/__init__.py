"""Renderer implementations; the interface is pipeline/renderer.py."""
