"""Every corpus a run needs, resolved from the `data` config section's path templates and encoded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distgem.errors import UserError
from distgem.tasks import mlm, xsr
from distgem.tasks.tagging import TaggedCorpus, load_tagged


@dataclass
class Corpora:
    train: TaggedCorpus
    dev: dict[str, TaggedCorpus]
    test: dict[str, TaggedCorpus]
    mono_train: dict[str, list[list[int]]] = field(default_factory=dict)
    mono_eval: dict[str, list[list[int]]] = field(default_factory=dict)
    pairs_train: dict[str, list] = field(default_factory=dict)
    pairs_eval: dict[str, list] = field(default_factory=dict)


def resolve_root(root: str) -> str:
    """A corpus directory; `embedded:<preset>` is the synthetic world, written on first use."""
    if root.startswith("embedded:"):
        from distgem.data.world import ensure_world

        return str(ensure_world(preset=root.split(":", 1)[1]))
    return root


def path_of(data, key: str, **fields) -> str:
    """Fill the template `data.<key>` and check that the file exists (naming the key when it does not)."""
    template = getattr(data, key)
    path = template.format(root=resolve_root(data.root), **fields)
    if not Path(path).is_file():
        raise UserError(f"data.{key}: {path}: no such file (template {template!r})")
    return path


def load_corpora(data, task, model, tokenizer, need_mono: list[str], need_pairs: list[str]) -> Corpora:
    """Tagging train (source), dev (targets), test (all); mono and parallel splits for memory and evaluation."""
    key = task.name

    def tagged(lang: str, split: str) -> TaggedCorpus:
        split_name = data.ner_splits[split] if key == "ner" else split
        return load_tagged(path_of(data, key, lang=lang, split=split_name), key, tokenizer, model.max_length, model.stride)

    languages = [task.source, *task.targets]
    corpora = Corpora(
        train=tagged(task.source, "train"),
        dev={lang: tagged(lang, "dev") for lang in task.targets},
        test={lang: tagged(lang, "test") for lang in languages},
    )
    for lang in need_mono:
        examples = mlm.load_mono(path_of(data, "mono", lang=lang), tokenizer, model.max_length)
        held = min(data.mlm_eval_sentences, len(examples) // 2)
        corpora.mono_train[lang], corpora.mono_eval[lang] = examples[:-held], examples[-held:]
    for lang in need_pairs:
        pairs = xsr.load_pairs(path_of(data, "parallel", lang=lang, side=lang),
                               path_of(data, "parallel", lang=lang, side="en"), tokenizer, model.max_length)
        held = min(data.xsr_eval_pairs, len(pairs) // 2)
        corpora.pairs_train[lang], corpora.pairs_eval[lang] = pairs[:-held], pairs[-held:]
    return corpora
