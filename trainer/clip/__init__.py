"""The CLIP backbone and the CLIPs the project builds offline (tiny, ViT-B/16-shaped)."""
