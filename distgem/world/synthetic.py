"""`distgem world`: the synthetic multilingual world, written in the formats of the real corpora.

Seven languages (en es fr el ru de nl) share a latent grammar and ontology (distgem.world.grammar) and
have their own words, scripts, word orders and morphology (distgem.world.lexicon). The world is written as
UD CoNLL-U (POS), CoNLL-2002 columns (NER), one sentence per line (MLM) and aligned files (XSR),
deterministically: the same seed and preset give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from distgem.store import build_once, cache_root, source_digest
from distgem.world.grammar import NER_STYLE, Ontology, Style, build_ontology, draw_sentence
from distgem.world.lexicon import Forms, Lexicon, build_lexicon, make_word
from distgem.world.profiles import LANGUAGES, Profile
from distgem.world.realise import Realiser, Word

WORLD_VERSION = 1
SOURCE = "en"
TARGETS = tuple(lang for lang in LANGUAGES if lang != SOURCE)
_NO_SPACE_BEFORE = frozenset(".,!?")


@dataclass(frozen=True)
class WorldPreset:
    """Vocabulary and corpus sizes (sentences per file) of one world."""

    nouns: int = 180
    verbs: int = 70
    adjectives: int = 50
    adverbs: int = 20
    names: int = 160
    """Shared name strings, split into first names, surnames, places and organisations."""
    ambiguity: float = 0.15
    """Share of verbs (adverbs) written like a noun (adjective) of the same language."""
    pos_train_source: int = 3000
    pos_train: int = 600
    """Training sentences of the target languages (unused by zero-shot transfer)."""
    pos_eval: int = 300
    """Sentences of every dev and test file."""
    ner_train_source: int = 3000
    ner_train: int = 600
    ner_eval: int = 300
    mono: int = 4000
    """Monolingual lines per language; the last `heldout` are for perplexity only."""
    parallel: int = 3000
    """Pairs per target language; the last `heldout` are the XSR evaluation set."""
    heldout: int = 500
    """Held out of every mono and parallel file (matches data.xsr_eval_pairs / mlm_eval_sentences)."""


PRESETS = {
    "tiny": WorldPreset(),
    "small": WorldPreset(
        nouns=360,
        verbs=140,
        adjectives=100,
        adverbs=40,
        names=320,
        pos_train_source=6000,
        pos_train=1000,
        pos_eval=500,
        ner_train_source=6000,
        ner_train=1000,
        ner_eval=500,
        mono=12000,
        parallel=8000,
    ),
    # seconds to write: unit and end-to-end tests only
    "test": WorldPreset(
        nouns=60,
        verbs=24,
        adjectives=18,
        adverbs=8,
        names=40,
        ambiguity=0.3,
        pos_train_source=80,
        pos_train=30,
        pos_eval=30,
        ner_train_source=40,
        ner_train=10,
        ner_eval=10,
        mono=60,
        parallel=60,
        heldout=20,
    ),
}


@dataclass
class World:
    ontology: Ontology
    lexicons: dict[str, Lexicon]


def build_world(seed: int, sizes: WorldPreset) -> World:
    """The ontology and every language's lexicon (names are registered first, so no word can take them)."""
    rng = random.Random(f"{seed}:ontology")
    forms = Forms()
    names: list[str] = []
    neutral = Profile("latin", tuple("bcdfgklmnprstvz"), tuple("aeiou"), ("", "", "n", "r", "s", "l"))
    while len(names) < sizes.names:
        name = make_word(rng, neutral, rng.choice((2, 2, 3))).capitalize()
        if forms.fresh([name]):
            forms.add([name], "*")
            names.append(name)
    ontology = build_ontology(rng, sizes.nouns, sizes.verbs, sizes.adjectives, sizes.adverbs, names)
    concepts = ontology.concepts()
    lexicons = {
        lang: build_lexicon(lang, concepts, random.Random(f"{seed}:lexicon:{lang}"), forms, sizes.ambiguity)
        for lang in LANGUAGES
    }
    return World(ontology, lexicons)


def write_world(out_dir: str | os.PathLike, seed: int = 0, preset: str = "tiny") -> dict:
    """Write every file of the world under `out_dir`; returns (and writes) world.json."""
    sizes = PRESETS[preset]
    world = build_world(seed, sizes)
    out = Path(out_dir)
    for sub in ("pos", "ner", "mono", "parallel"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    heldout_texts: dict[str, set[str]] = {lang: set() for lang in LANGUAGES}
    for lang in TARGETS:
        files.update(_write_parallel(out, world, seed, lang, sizes, heldout_texts))
    for lang in LANGUAGES:
        files.update(_write_mono(out, world, seed, lang, sizes, heldout_texts[lang]))
        for split, count in (
            ("train", sizes.pos_train_source if lang == SOURCE else sizes.pos_train),
            ("dev", sizes.pos_eval),
            ("test", sizes.pos_eval),
        ):
            files.update(_write_tagged(out, world, seed, lang, "pos", split, count))
        for split, count in (
            ("train", sizes.ner_train_source if lang == SOURCE else sizes.ner_train),
            ("testa", sizes.ner_eval),
            ("testb", sizes.ner_eval),
        ):
            files.update(_write_tagged(out, world, seed, lang, "ner", split, count))
    onto = world.ontology
    info = {
        "version": WORLD_VERSION,
        "seed": seed,
        "preset": preset,
        "sizes": asdict(sizes),
        "source": SOURCE,
        "targets": list(TARGETS),
        "heldout": {"mono": sizes.heldout, "parallel": sizes.heldout},
        "languages": {
            lang: {
                "script": lex.profile.script,
                "words": len(lex.stems),
                "function_words": len(set(lex.function.values())),
                "homographs": len(lex.homographs),
                "adjective_after_noun": lex.profile.adj_after_noun,
                "verb_second": lex.profile.verb_second,
                "pro_drop": lex.profile.pro_drop,
                "multiword_tokens": lex.profile.contractions,
            }
            for lang, lex in world.lexicons.items()
        },
        "names": {
            "first": [n for n, _ in onto.first],
            "last": onto.last,
            "places": [n for n, _ in onto.places],
            "orgs": onto.orgs,
        },
        "files": dict(sorted(files.items())),
    }
    (out / "world.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return info


def _draws(
    world: World, seed: int, tag: str, style: Style, count: int, langs: tuple[str, ...], avoid: set[str] | None = None
) -> Iterator[dict[str, list[Word]]]:
    """`count` abstract sentences realised in `langs`, distinct in the first language and not in `avoid`."""
    rng = random.Random(f"{seed}:{tag}")
    realisers = {lang: Realiser(world.lexicons[lang], random.Random(f"{seed}:{tag}:{lang}")) for lang in langs}
    seen: set[str] = set()
    produced = 0
    for attempt in range(count * 20):
        if produced == count:
            return
        sentence = draw_sentence(world.ontology, style, rng)
        realised = {lang: realisers[lang].sentence(sentence) for lang in langs}
        key = text_of(realised[langs[0]])
        if key in seen or (avoid is not None and key in avoid):
            continue
        seen.add(key)
        produced += 1
        yield realised
    raise RuntimeError(f"{tag}: could not draw {count} distinct sentences")


def _write_parallel(
    out: Path, world: World, seed: int, lang: str, sizes: WorldPreset, heldout_texts: dict[str, set[str]]
) -> dict[str, dict]:
    lines: dict[str, list[str]] = {SOURCE: [], lang: []}
    for i, pair in enumerate(_draws(world, seed, f"parallel:{lang}", Style(), sizes.parallel, (SOURCE, lang))):
        for side in (SOURCE, lang):
            lines[side].append(text_of(pair[side]))
            if i >= sizes.parallel - sizes.heldout:
                heldout_texts[side].add(lines[side][-1])
    return {
        _write_lines(out / "parallel" / f"en-{lang}.{side}", lines[side]): {"lines": len(lines[side])}
        for side in (SOURCE, lang)
    }


def _write_mono(out: Path, world: World, seed: int, lang: str, sizes: WorldPreset, avoid: set[str]) -> dict[str, dict]:
    lines = [text_of(s[lang]) for s in _draws(world, seed, f"mono:{lang}", Style(), sizes.mono, (lang,), avoid)]
    return {_write_lines(out / "mono" / f"{lang}.txt", lines): {"lines": len(lines)}}


def _write_tagged(out: Path, world: World, seed: int, lang: str, task: str, split: str, count: int) -> dict[str, dict]:
    style = NER_STYLE if task == "ner" else Style()
    draws = _draws(world, seed, f"{task}:{lang}:{split}", style, count, (lang,))
    if task == "pos":
        blocks = [conllu_block(s[lang], f"{lang}-{split}-{i}") for i, s in enumerate(draws, 1)]
        path = out / "pos" / f"{lang}-{split}.conllu"
    else:
        blocks = []
        for i, s in enumerate(draws):
            if i % 20 == 0:  # CoNLL files are split into documents
                blocks.append("-DOCSTART- -X- O\n")
            blocks.append("".join(f"{form} {upos} {entity}\n" for form, upos, entity, _ in tokens(s[lang])))
        path = out / "ner" / f"{lang}.{split}"
    text = "\n".join(blocks)
    path.write_text(text, encoding="utf-8", newline="\n")
    return {_relative(path): {"lines": text.count("\n"), "sentences": count}}


def tokens(words: list[Word]) -> Iterator[tuple[str, str, str, int]]:
    """Orthographic tokens: (form, upos, entity, words it spans); a contraction spans two words."""
    i = 0
    while i < len(words):
        w = words[i]
        span = 2 if w.fused else 1
        yield (w.fused or w.form), w.upos, w.entity, span
        i += span


def text_of(words: list[Word]) -> str:
    out = []
    for form, upos, _, _ in tokens(words):
        if out and form in _NO_SPACE_BEFORE:
            out[-1] += form
        else:
            out.append(form)
    return " ".join(out)


def conllu_block(words: list[Word], sent_id: str) -> str:
    """One sentence in CoNLL-U: heads as 1-based positions, multiword ranges, SpaceAfter=No before punctuation."""
    position = {w.key: i for i, w in enumerate(words, 1)}
    toks = list(tokens(words))
    lines = [f"# sent_id = {sent_id}", f"# text = {text_of(words)}"]
    i = 0
    for t, (form, _, _, span) in enumerate(toks):
        glued = t + 1 < len(toks) and toks[t + 1][0] in _NO_SPACE_BEFORE
        misc = "SpaceAfter=No" if glued else "_"
        if span > 1:
            lines.append(f"{i + 1}-{i + span}\t{form}\t_\t_\t_\t_\t_\t_\t_\t{misc}")
            misc = "_"
        for w in words[i : i + span]:
            feats = "|".join(sorted(w.feats, key=str.lower)) or "_"
            head = position.get(w.head, 0)
            lines.append(f"{position[w.key]}\t{w.form}\t{w.lemma}\t{w.upos}\t_\t{feats}\t{head}\t{w.deprel}\t_\t{misc}")
        i += span
    return "\n".join(lines) + "\n"


def _write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")
    return _relative(path)


def _relative(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


WORLD_MODULES = (
    "distgem.world.synthetic",
    "distgem.world.grammar",
    "distgem.world.realise",
    "distgem.world.lexicon",
    "distgem.world.profiles",
)


def world_key(preset: str, seed: int) -> str:
    """Cache name of a world: preset, seed and a hash of the generator's code and sizes."""
    digest = hashlib.sha256(
        (source_digest(*WORLD_MODULES) + json.dumps(asdict(PRESETS[preset]), sort_keys=True)).encode()
    )
    return f"{preset}-s{seed}-{digest.hexdigest()[:12]}"


def ensure_world(preset: str = "tiny", seed: int = 0) -> Path:
    """The cached world directory of (preset, seed), written on first use."""
    if preset not in PRESETS:
        from distgem.errors import UserError

        raise UserError(f"unknown world preset {preset!r} (choose from {', '.join(PRESETS)})")
    return build_once(cache_root() / "worlds" / world_key(preset, seed), lambda tmp: write_world(tmp, seed, preset))


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory to write the world into")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument(
        "--preset",
        default="tiny",
        choices=list(PRESETS),
        help="tiny (the embedded default), small (experiments), test (seconds, for tests)",
    )


def run(args) -> int:
    info = write_world(args.out, args.seed, args.preset)
    total = sum(f.get("sentences", f["lines"]) for f in info["files"].values())
    print(
        f"wrote {len(info['files'])} files ({total} sentences) and world.json to {args.out} "
        f"(preset {args.preset}, seed {args.seed})"
    )
    return 0
