"""transformer-pl: Transformers from first principles, trained by a reproducible MLOps pipeline."""

__version__ = "0.1.0"
