"""One run's training: configs and presets, the callback-driven trainer, checkpoints,
``run_model`` (the one place a run's model is built, or rebuilt from a checkpoint) and the
cache of pretrained float models."""
