"""The fine-tuning loop: job intake, fair-share admission, backends, gate, promotion."""
