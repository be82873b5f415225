"""aebench: a quality-of-service benchmark harness for autoencoders."""

__version__ = "0.1.0"
