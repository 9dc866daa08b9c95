"""`dppp train`: the streaming training run on Ray Train, its loop, checkpoints and logs."""
