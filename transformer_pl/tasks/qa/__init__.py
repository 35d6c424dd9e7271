"""Extractive question answering (task: qa): a span head on the encoder."""
