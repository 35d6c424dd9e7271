"""Named-entity recognition (task: tag): a token-classification head on the encoder."""
