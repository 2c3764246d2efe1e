"""Channels (fibre, free space) and receivers (detectors, misalignment)."""
