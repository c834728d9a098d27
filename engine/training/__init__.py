"""Training: configuration, batches, objectives, checkpoints and pictures; the loop itself is
engine/training/loop.py."""
