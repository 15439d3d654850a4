"""Checkpoint export tooling."""
