"""Training: train state and optimizers, pure step functions, and the shared experiment loop."""
