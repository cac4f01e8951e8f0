"""Adapt room: adaptation methods, the training loop on accelerate, checkpoints and resume."""
