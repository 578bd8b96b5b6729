"""Orchestration: the only layer that combines data, models, losses, inference and metrics."""
