"""Where fine-tuning jobs run, behind one port (`port.TrainingBackend`)."""
