"""Data: the in-memory dataset, its confidence levels, and patient-grouped folds."""
