"""The embedded default: a synthetic multilingual world and a tiny backbone pre-trained on it."""
