"""Abstractive summarization (task: summarize): the encoder–decoder writes a source's summary."""
