"""Feedback intake, consent, PII removal and the inference log."""
