"""Drift detection per tenant and model version: quality drift from the feedback stream
(`quality`), input drift from prompt features (`input_drift`)."""
