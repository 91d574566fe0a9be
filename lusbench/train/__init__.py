"""Training: label strategies (confidence -> targets), models, augmentation, the training engine, checkpoints."""
