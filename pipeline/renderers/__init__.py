"""Renderer implementations and their registry (registry.py); the interface is pipeline/renderer.py."""
