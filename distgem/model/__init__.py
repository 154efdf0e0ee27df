"""The model: a Hugging Face encoder with the task heads and sentence embeddings; backbones."""
