"""One run's training: configs and presets, the callback-driven trainer, checkpoints (the one
place a checkpoint becomes a model) and the cache of pretrained float models."""
