"""The Re-ID methods (PDM and its baselines): models, losses, configs."""
