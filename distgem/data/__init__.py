"""Readers for the project's corpus formats, subword alignment and the synthetic world."""
