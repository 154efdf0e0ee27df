"""Configuration: the run's dataclass sections, strict YAML loading, the generated reference."""
