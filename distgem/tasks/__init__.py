"""Tasks: tagging (POS/NER, the fine-tuning task), mlm and xsr (memory tasks): batches, losses' inputs, evaluation."""
