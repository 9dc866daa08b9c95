"""The procedural renderer: numpy/PIL drawings of the sampled pedestrian (renderer.py), one module per
part of the picture."""
