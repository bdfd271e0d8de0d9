"""Training: data preparation, the loop, checkpoints."""
