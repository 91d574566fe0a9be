"""Execution: the run plan, presets, the grid of trainings and the runner that ties the stages together."""
