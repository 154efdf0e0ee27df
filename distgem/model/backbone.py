"""Backbones by Hugging Face directory or hub name, or the embedded default (`embedded:tiny|small`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from distgem.errors import ConfigError, UserError

if TYPE_CHECKING:
    from distgem.config.sections import RunConfig

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


def check_config(config: RunConfig, backbone) -> None:
    """Config values that only the backbone can judge, checked before anything is built."""
    method = config.method
    if "mlm" in method.memory and not has_mlm_head(backbone.config):
        raise ConfigError(f"method.memory: {config.model.backbone} has no masked-LM head; use [xsr]")
    layers = getattr(backbone.config, "num_hidden_layers", None)
    if layers is not None and not -(layers + 1) <= method.xsr_layer <= layers:
        raise ConfigError(
            f"method.xsr_layer: {method.xsr_layer} is not a layer of {config.model.backbone} "
            f"({layers} layers: 0 = embeddings .. {layers}, or -1 for the last)"
        )
    if method.name == "frozen" and layers is not None and method.frozen_layers > layers:
        raise ConfigError(
            f"method.frozen_layers: {method.frozen_layers} is more than the {layers} layers of {config.model.backbone}"
        )
    if (
        method.name == "gem"
        and method.gem.target == "update"
        and config.train.zero_stage == 0
        and config.train.precision != "fp32"
    ):
        raise ConfigError(
            f"method.gem.target: update edits the optimizer's master weights, which ZeRO 0 "
            f"keeps out of reach in {config.train.precision}; use train.zero_stage >= 1 or fp32"
        )


def _not_found(name: str, path: str, err: Exception) -> str:
    if os.path.isdir(path) or Path(path).exists():
        return f"{path}: not a loadable Hugging Face model directory ({str(err).splitlines()[0]})"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return (
        f"model {name!r} is neither a local directory nor {'available offline' if offline else 'reachable'}: "
        f"download it where there is network (huggingface-cli download {name} --local-dir DIR) and set "
        f"model.backbone=DIR, or use model.backbone=embedded:tiny"
    )
