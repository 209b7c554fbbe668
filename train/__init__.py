"""Training, evaluation and data code for p2p's pipelines (the accelerate scripts and their modules)."""
