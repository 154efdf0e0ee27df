"""Gradient Episodic Memory: the dual QP and projection (projection.py), memory gradients (memory.py)."""
