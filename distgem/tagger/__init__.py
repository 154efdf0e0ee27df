"""A trained tagger outside training: export to a Hugging Face directory, predict files."""
