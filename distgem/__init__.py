"""distgem: distributed Gradient Episodic Memory for cross-lingual fine-tuning."""

__version__ = "0.1.0"
