"""Evaluation: segmentation metrics, features of segmentations, downstream tasks, statistics."""
