"""The training engine: optimizer set-up, the training loop, checkpoints and metrics."""
