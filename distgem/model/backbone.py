"""Backbones by Hugging Face directory or hub name, or the embedded default (`embedded:tiny|small`)."""

from __future__ import annotations

import os
from pathlib import Path

from distgem.errors import UserError

EMBEDDED = "embedded:"


def resolve(name: str) -> str:
    """A loadable directory or hub name; `embedded:<preset>` is built and cached on first use."""
    if name.startswith(EMBEDDED):
        from distgem.world.pretrain import ensure_backbone

        return str(ensure_backbone(preset=name[len(EMBEDDED) :]))
    return name


def load_tokenizer(name: str):
    """(fast tokenizer, model config) without the weights (what `distgem data prepare` needs)."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve(name)
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UserError(_not_found(name, path, err)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{name}: subword alignment needs a fast tokenizer (tokenizer.json)")
    return tokenizer, config


def has_mlm_head(config) -> bool:
    return any(a.endswith("ForMaskedLM") for a in (config.architectures or []))


def load(name: str, dropout: float | None = None):
    """(tokenizer, model with an MLM head if the checkpoint has one) from a directory or hub name."""
    import transformers
    from transformers import AutoModel, AutoModelForMaskedLM

    path = resolve(name)
    tokenizer, config = load_tokenizer(name)
    if dropout is not None:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, key):
                setattr(config, key, dropout)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "some weights were not used": expected for MLM heads
    try:
        model_class = AutoModelForMaskedLM if has_mlm_head(config) else AutoModel
        model = model_class.from_pretrained(path, config=config)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return tokenizer, model


def _not_found(name: str, path: str, err: Exception) -> str:
    if os.path.isdir(path) or Path(path).exists():
        return f"{path}: not a loadable Hugging Face model directory ({str(err).splitlines()[0]})"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return (
        f"model {name!r} is neither a local directory nor {'available offline' if offline else 'reachable'}: "
        f"download it where there is network (huggingface-cli download {name} --local-dir DIR) and set "
        f"model.backbone=DIR, or use model.backbone=embedded:tiny"
    )
