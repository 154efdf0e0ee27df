"""The synthetic world's lexicons: each language's generated words, built from its profile (`world.profiles`).

Every language realises the same latent concepts (`distgem.world.grammar.Ontology`) with its own words,
built from its own syllable inventory and script, so that no surface form is shared between two
languages except names, digits and punctuation. All randomness comes from one `random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from distgem.world.profiles import CYRILLIC, GREEK, PERSONS, PROFILES, Profile

PRONOUNS = ("1s", "2s", "3sm", "3sf", "1p", "2p", "3p")  # person index: 0 1 2 2 3 4 5
PRONOUN_PERSON = {"1s": 0, "2s": 1, "3sm": 2, "3sf": 2, "1p": 3, "2p": 4, "3p": 5}
AUXILIARIES = ("will", "can", "has", "do")  # `do` carries English negation only
ADPOSITIONS = ("in", "on", "with", "from", "to", "of", "for", "under", "near", "without")
CONJUNCTIONS = ("and", "but", "or")
SUBORDINATORS = ("that", "because", "when", "if")
INTERJECTIONS = ("oh", "yes", "well")
FOREIGN = ("etc", "alia")  # tagged X
NUMBER_WORDS = 12


_TO_GREEK = dict(zip("abcdefghiklmnoprstuvxz", "αβκδεφγχικλμνοπρστυβξζ"))
_TO_CYRILLIC = dict(zip("abcdefghijklmnopqrstuvwyz", "абкдефгхийклмнопкрстуввыз"))


def transliterate(word: str, script: str) -> str:
    """Latin -> Greek or Cyrillic letters (demonyms of el and ru); other scripts unchanged."""
    table = {GREEK: _TO_GREEK, CYRILLIC: _TO_CYRILLIC}.get(script)
    return word if table is None else "".join(table.get(c, c) for c in word.lower())


def final_sigma(word: str) -> str:
    return word[:-1] + "ς" if word.endswith("σ") else word


@dataclass
class Lexicon:
    """One language's words: content stems and genders per concept, and its function-word forms."""

    lang: str
    profile: Profile
    stems: dict[str, str] = field(default_factory=dict)  # concept -> stem
    genders: dict[str, int] = field(default_factory=dict)  # noun concept -> gender
    function: dict[tuple, str] = field(default_factory=dict)  # (category, key...) -> form
    homographs: list[tuple[str, str]] = field(default_factory=list)  # (concept, concept) written alike
    postnominal: set[str] = field(default_factory=set)  # adjectives that follow their noun

    def noun(self, concept: str, number: str, case: str = "nom") -> str:
        return _inflect(self.stems[concept], self.profile.noun, self.genders.get(concept, 0), number, case)

    def adjective(self, concept: str, gender: int, number: str) -> str:
        return self.inflect_adjective(self.stems[concept], gender, number)

    def inflect_adjective(self, stem: str, gender: int, number: str) -> str:
        return _inflect(stem, self.profile.adj, gender, number, "nom")

    def verb(self, concept: str, form: str, person: int = 2) -> str:
        """form: pres | past | bare | part (finite forms agree with `person`)."""
        p, stem = self.profile, self.stems[concept]
        if form == "pres" or (form == "bare" and p.bare_is_finite):
            return stem + p.pres[person]
        if form == "past":
            return stem + p.past[person]
        if form == "part" and p.participle is not None:
            return p.participle[0] + stem + p.participle[1]
        return stem + p.infinitive

    def auxiliary(self, aux: str, person: int) -> str:
        stem = self.function[("AUX", aux)]
        return stem if aux in self.profile.invariant_aux else stem + self.profile.pres[person]

    def article(self, kind: str, number: str, gender: int, case: str) -> str | None:
        """The determiner form, or None where the language has none (Russian articles, plural indefinites)."""
        dims = self.profile.det_vary.get(kind)
        if dims is None or (kind == "indef" and number == "pl"):
            return None
        return self.function[("DET", kind, *_det_key(dims, number, gender, case))]

    def paradigm(self, upos: str, concept: str) -> list[str]:
        """Every form a concept can take (for the no-shared-surface-forms check)."""
        if upos == "NOUN":
            return sorted({self.noun(concept, n, c) for n in ("sg", "pl") for c in ("nom", "acc")})
        if upos == "ADJ":
            return sorted({self.adjective(concept, g, n) for g in range(3) for n in ("sg", "pl")})
        if upos == "VERB":
            return sorted({self.verb(concept, f, p) for f in ("pres", "past", "bare", "part") for p in range(PERSONS)})
        return [self.stems[concept]]

    def lemma(self, upos: str, concept: str) -> str:
        if upos == "NOUN":
            return self.noun(concept, "sg")
        if upos == "ADJ":
            return self.adjective(concept, 0, "sg")
        if upos == "VERB":
            return self.verb(concept, "pres", 0) if self.profile.bare_is_finite else self.verb(concept, "bare")
        return self.stems[concept]


def _inflect(stem: str, table: dict, gender: int, number: str, case: str) -> str:
    for key in ((gender, number, case), (gender, number), (0, number)):
        if key in table:
            return final_sigma(stem + table[key])
    return final_sigma(stem)


def _det_key(dims: tuple[str, ...], number: str, gender: int, case: str) -> tuple[str, ...]:
    """The dimensions a determiner agrees in; `gender_sg`: gender in the singular only (les, die)."""
    key = [number] if "number" in dims else []
    if "gender" in dims or ("gender_sg" in dims and number == "sg"):
        key.append(f"g{gender}")
    if "case" in dims:
        key.append(case)
    return tuple(key)


class Forms:
    """Registry of every surface form (lower-cased) and the language that owns it: keeps languages apart."""

    def __init__(self):
        self.owner: dict[str, str] = {}

    def fresh(self, forms: list[str]) -> bool:
        return not any(f.lower() in self.owner for f in forms)

    def add(self, forms: list[str], lang: str) -> None:
        for f in forms:
            self.owner.setdefault(f.lower(), lang)


def make_word(rng: random.Random, p: Profile, syllables: int, closed: bool = False) -> str:
    """A pseudo-word from the language's syllables; `closed` ends it in a consonant (stems take vowel suffixes)."""
    word = "".join(
        rng.choice(p.onsets) + rng.choice(p.vowels) + (rng.choice(p.codas) if i == syllables - 1 else "")
        for i in range(syllables)
    )
    if closed and not any(word.endswith(c) for c in p.codas if c):
        word += rng.choice([o for o in p.onsets if len(o) == 1])
    return word


def build_lexicon(
    lang: str, concepts: list[tuple[str, str]], rng: random.Random, forms: Forms, ambiguity: float
) -> Lexicon:
    """Words for `concepts` [(id, upos)], unused by any other language; a share of verbs/adverbs become homographs."""
    p = PROFILES[lang]
    lex = Lexicon(lang, p)
    for concept, upos in concepts:
        if upos == "NOUN":
            lex.genders[concept] = rng.randrange(p.genders)
        for attempt in range(1000):
            stem = make_word(rng, p, rng.choice((1, 1, 2, 2, 2, 3)), closed=upos != "ADV")
            lex.stems[concept] = final_sigma(stem) if upos == "ADV" else stem
            words = lex.paradigm(upos, concept)
            if forms.fresh(words) and len(lex.stems[concept]) >= 2:
                break
        else:
            raise RuntimeError(f"{lang}: no free word for {concept}")
        forms.add(words, lang)
    lex.postnominal = {c for c, upos in concepts if upos == "ADJ" and rng.random() < p.adj_after_noun}
    _add_function_words(lex, rng, forms)
    _add_homographs(lex, concepts, rng, forms, ambiguity)
    return lex


def _add_function_words(lex: Lexicon, rng: random.Random, forms: Forms) -> None:
    p = lex.profile

    def short(key: tuple, syllables: int = 1) -> str:
        for _ in range(1000):
            word = final_sigma(make_word(rng, p, syllables))
            if forms.fresh([word]) and word not in lex.function.values():
                lex.function[key] = word
                forms.add([word], lex.lang)
                return word
        raise RuntimeError(f"{lex.lang}: no free function word for {key}")

    for kind, dims in sorted(p.det_vary.items()):
        numbers = ("sg",) if kind == "indef" else ("sg", "pl")
        keys = {_det_key(dims, n, g, c) for n in numbers for g in range(p.genders) for c in ("nom", "acc")}
        for key in sorted(keys):
            short(("DET", kind, *key))
    for pron in PRONOUNS:
        for case in ("nom", "acc"):
            short(("PRON", pron, case), 1 if case == "nom" else rng.choice((1, 2)))
    for aux in AUXILIARIES:
        short(("AUX", aux))
    for group, words in (
        ("ADP", ADPOSITIONS),
        ("CCONJ", CONJUNCTIONS),
        ("SCONJ", SUBORDINATORS),
        ("INTJ", INTERJECTIONS),
        ("X", FOREIGN),
    ):
        for word in words:
            short((group, word), 1 if group != "X" else 2)
    for n in range(1, NUMBER_WORDS + 1):
        short(("NUM", n), 1 + n // 7)
    short(("PART", "neg"))
    if p.negation == "wrap":
        short(("PART", "neg2"))
    if p.contractions:  # ADP "of"/"to" + definite masculine singular article -> one orthographic word
        article = lex.article("def", "sg", 0, "nom")
        for adp in ("of", "to"):
            fused = lex.function[("ADP", adp)] + article[-1]
            if not forms.fresh([fused]):
                fused = short(("FUSED", adp))
            lex.function[("FUSED", adp)] = fused
            forms.add([fused], lex.lang)


def _add_homographs(
    lex: Lexicon, concepts: list[tuple[str, str]], rng: random.Random, forms: Forms, ambiguity: float
) -> None:
    """Tagging must use context: some verbs take the form of a noun (3sg present = noun), some adverbs an
    adjective's."""
    by_tag: dict[str, list[str]] = {}
    for concept, upos in concepts:
        by_tag.setdefault(upos, []).append(concept)
    p = lex.profile
    endings = [p.infinitive, p.pres[2], p.pres[0], p.past[2]]  # verb forms a noun may coincide with
    for verb in by_tag["VERB"]:
        if rng.random() >= ambiguity or p.capitalise_nouns:
            continue
        noun = rng.choice(by_tag["NOUN"])
        word = lex.noun(noun, "sg")
        ending = next((e for e in endings if word.endswith(e) and len(word) - len(e) >= 2), None)
        if ending is None:
            continue
        old = lex.stems[verb]
        lex.stems[verb] = word[: len(word) - len(ending)]
        new = [f for f in lex.paradigm("VERB", verb) if f not in lex.paradigm("NOUN", noun)]
        if forms.fresh(new):
            forms.add(new, lex.lang)
            lex.homographs.append((noun, verb))
        else:
            lex.stems[verb] = old
    for adverb in by_tag["ADV"]:
        if rng.random() < ambiguity:
            adjective = rng.choice(by_tag["ADJ"])
            lex.stems[adverb] = lex.adjective(adjective, 0, "sg")
            lex.homographs.append((adjective, adverb))
    demonstrative = lex.article("dem", "sg", 0, "nom")
    if demonstrative and rng.random() < 0.5:  # English "that": determiner and subordinator
        lex.function[("SCONJ", "that")] = demonstrative
        lex.homographs.append(("dem", "that"))
