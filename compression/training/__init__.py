"""The shared training loop (see loop.py) and its pieces: schedule, optimizer, resumable checkpoints."""

from compression.training.loop import TrainReport, epoch_batches, train

__all__ = ["TrainReport", "epoch_batches", "train"]
