"""Batch inference from blob uploads: intake, fan-out, progress, gathering (see service.py)."""
