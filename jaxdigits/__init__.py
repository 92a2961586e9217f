"""jaxdigits: handwritten-digit classification in JAX, from pure functions to served models."""

__version__ = "0.1.0"
