"""Training: the shared batching path, objectives and the pretraining loop (no AnnData)."""
