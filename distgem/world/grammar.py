"""The synthetic world's latent grammar: an ontology and the abstract sentences drawn over it.

An abstract sentence (clauses of noun phrases over shared concepts) is drawn once and realised in
any language by `distgem.world.realise`; a translation pair is one abstract sentence realised twice.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from distgem.world.lexicon import (
    ADPOSITIONS,
    CONJUNCTIONS,
    FOREIGN,
    INTERJECTIONS,
    NUMBER_WORDS,
    PRONOUNS,
    SUBORDINATORS,
)

CLASSES = ("person", "animal", "thing", "place", "food", "idea")
ADP_CLASSES = {
    "in": ("place", "thing"),
    "on": ("thing", "place"),
    "with": ("person", "thing", "animal"),
    "from": ("place", "person"),
    "to": ("place", "person"),
    "of": ("thing", "idea"),
    "for": ("person", "idea"),
    "under": ("thing", "place"),
    "near": ("place", "animal"),
    "without": ("thing", "person", "food"),
}


class Pool:
    """Weighted choice over a fixed list (Zipf-like weights), by bisection on cumulative weights."""

    def __init__(self, items: list, exponent: float = 0.9):
        self.items = list(items)
        self.cumulative = list(itertools.accumulate(1.0 / (i + 1) ** exponent for i in range(len(self.items))))

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])]


@dataclass(frozen=True)
class Verb:
    """A verb with selectional restrictions (classes) and preferences (particular arguments)."""

    concept: str
    subjects: tuple[str, ...]
    object: str | None
    preferred_subjects: Pool
    preferred_objects: Pool | None
    preferred_obliques: Pool  # (adposition, noun) frames: "sleep in bed", "go to school"


@dataclass
class Ontology:
    """What every language talks about: classes of nouns, verbs with selectional restrictions, names."""

    nouns: dict[str, Pool]
    verbs: Pool
    adjectives: dict[str, Pool]
    adverbs: Pool
    noun_class: dict[str, str]
    noun_adjectives: dict[str, Pool]  # adjectives a noun prefers
    noun_associates: dict[str, Pool]  # nouns in its "of" phrases
    generics: list[str]  # translated words inside organisation names (Bank, Group)
    first: list[tuple[str, int]]  # shared person names with a grammatical gender
    last: list[str]
    places: list[tuple[str, int]]
    orgs: list[str]

    def concepts(self) -> list[tuple[str, str]]:
        """(concept, upos) of every content word, in a fixed order."""
        nouns = sorted(self.noun_class, key=_number)
        adjectives = sorted({c for pool in self.adjectives.values() for c in pool.items}, key=_number)
        return (
            [(c, "NOUN") for c in nouns]
            + [(v.concept, "VERB") for v in self.verbs.items]
            + [(c, "ADJ") for c in adjectives]
            + [(c, "ADV") for c in self.adverbs.items]
            + [(c, "NOUN") for c in self.generics]
        )


def _number(concept: str) -> int:
    return int(concept[1:])


def build_ontology(
    rng: random.Random, nouns: int, verbs: int, adjectives: int, adverbs: int, names: list[str], preferences: int = 6
) -> Ontology:
    """Random classes, restrictions and preferences; `names` are shared strings split into first/last/places/orgs.

    Preferences give each word a distributional fingerprint (which verbs take it, which adjectives
    modify it) that every language shares: what lets a model align words it never saw translated.
    """
    noun_ids = [f"n{i}" for i in range(nouns)]
    noun_class = {n: CLASSES[i % len(CLASSES)] for i, n in enumerate(noun_ids)}
    by_class = {cls: [n for n in noun_ids if noun_class[n] == cls] for cls in CLASSES}
    adjective_ids = [f"a{i}" for i in range(adjectives)]
    applies = {a: rng.sample(CLASSES, rng.randint(1, 3)) for a in adjective_ids}
    by_adj = {cls: [a for a in adjective_ids if cls in applies[a]] or adjective_ids[:1] for cls in CLASSES}

    def prefer(candidates: list) -> Pool:
        return Pool(rng.sample(candidates, min(preferences, len(candidates))), exponent=0.5)

    verb_list = []
    for i in range(verbs):
        subjects = ("person",) if rng.random() < 0.6 else tuple(sorted(rng.sample(("person", "animal", "thing"), 2)))
        obj = None if rng.random() < 0.25 else rng.choice(CLASSES)
        frames = [(adp, n) for adp in ADPOSITIONS for cls in ADP_CLASSES[adp] for n in by_class[cls]]
        verb_list.append(
            Verb(
                f"v{i}",
                subjects,
                obj,
                prefer([n for c in subjects for n in by_class[c]]),
                prefer(by_class[obj]) if obj else None,
                prefer(frames),
            )
        )
    return Ontology(
        nouns={cls: Pool(rng.sample(ids, len(ids))) for cls, ids in by_class.items()},
        verbs=Pool(rng.sample(verb_list, len(verb_list))),
        adjectives={cls: Pool(rng.sample(ids, len(ids))) for cls, ids in by_adj.items()},
        adverbs=Pool([f"r{i}" for i in range(adverbs)]),
        noun_class=noun_class,
        noun_adjectives={n: prefer(by_adj[noun_class[n]]) for n in noun_ids},
        noun_associates={
            n: prefer([m for m in noun_ids if m != n and noun_class[m] in ("thing", "place", "idea")]) for n in noun_ids
        },
        generics=[f"g{i}" for i in range(4)],
        first=[(n, rng.randrange(2)) for n in names[: len(names) // 4]],
        last=names[len(names) // 4 : len(names) // 2],
        places=[(n, rng.randrange(2)) for n in names[len(names) // 2 : 3 * len(names) // 4]],
        orgs=names[3 * len(names) // 4 :],
    )


@dataclass(frozen=True)
class Style:
    """Probabilities of the sentence generator (NER data uses more names)."""

    preference: float = 0.8
    """Probability that an argument or modifier comes from the head's preferences (else from its class)."""
    pronoun: float = 0.2
    name: float = 0.08
    org: float = 0.03
    demonym: float = 0.02
    adjective: float = 0.35
    number: float = 0.15
    pp: float = 0.35
    adverb: float = 0.25
    aux: float = 0.35
    negation: float = 0.15
    coordination: float = 0.12
    subordination: float = 0.15


NER_STYLE = Style(pronoun=0.1, name=0.45, org=0.2, demonym=0.12)


@dataclass
class NP:
    kind: str  # noun | pron | name | org | quant
    head: str = ""  # noun concept, pronoun, or the generic word of an organisation
    number: str = "sg"
    det: str | None = None  # def | indef | dem
    adjectives: tuple[str, ...] = ()
    demonym: str | None = None  # a place name, realised as a MISC adjective
    count: int | str | None = None  # number word (int) or digits (str)
    name: tuple[str, ...] = ()
    entity: str | None = None
    gender: int = 0
    of: NP | None = None  # "of" + NP attached to the noun


@dataclass
class Clause:
    subject: NP
    verb: str
    tense: str
    aux: str | None
    negated: bool
    object: NP | None
    pps: list[tuple[str, NP]]
    adverb: str | None


@dataclass
class Sentence:
    main: Clause
    link: tuple[str, str, Clause] | None = None  # (cc | sc, conjunction, clause)
    interjection: str | None = None
    foreign: str | None = None
    punct: str = "."


def draw_sentence(onto: Ontology, style: Style, rng: random.Random) -> Sentence:
    """One abstract sentence: a main clause, maybe a coordinated or subordinate clause."""
    main = _clause(onto, style, rng)
    link = None
    r = rng.random()
    if r < style.coordination:
        link = ("cc", rng.choice(CONJUNCTIONS), _clause(onto, style, rng))
    elif r < style.coordination + style.subordination:
        link = ("sc", rng.choice(SUBORDINATORS), _clause(onto, style, rng))
    return Sentence(
        main,
        link,
        interjection=rng.choice(INTERJECTIONS) if rng.random() < 0.03 else None,
        foreign=rng.choice(FOREIGN) if rng.random() < 0.01 else None,
        punct=rng.choices(".!?", (0.88, 0.06, 0.06))[0],
    )


def _clause(onto: Ontology, style: Style, rng: random.Random) -> Clause:
    verb = onto.verbs.pick(rng)
    subject = _argument(onto, style, rng, verb.preferred_subjects, rng.choice(verb.subjects))
    obj = None
    if verb.object is not None:
        obj = (
            NP("quant", count=str(rng.randint(2, 99)))
            if rng.random() < 0.01
            else _argument(onto, style, rng, verb.preferred_objects, verb.object)
        )
    pps = []
    while len(pps) < 2 and rng.random() < style.pp:
        if rng.random() < style.preference:
            adp, noun = verb.preferred_obliques.pick(rng)
            pps.append((adp, _np(onto, style, rng, onto.noun_class[noun], noun=noun)))
        else:
            adp = rng.choice(ADPOSITIONS)
            pps.append((adp, _np(onto, style, rng, rng.choice(ADP_CLASSES[adp]))))
    return Clause(
        subject,
        verb.concept,
        rng.choice(("pres", "past")),
        rng.choice(("will", "can", "has")) if rng.random() < style.aux else None,
        rng.random() < style.negation,
        obj,
        pps,
        onto.adverbs.pick(rng) if rng.random() < style.adverb else None,
    )


def _argument(onto: Ontology, style: Style, rng: random.Random, preferred: Pool, cls: str) -> NP:
    if rng.random() < style.preference:
        noun = preferred.pick(rng)
        return _np(onto, style, rng, onto.noun_class[noun], noun=noun)
    return _np(onto, style, rng, cls)


def _np(onto: Ontology, style: Style, rng: random.Random, cls: str, depth: int = 0, noun: str | None = None) -> NP:
    r = rng.random()
    if cls == "person":
        if r < style.pronoun:
            return NP("pron", rng.choice(PRONOUNS))
        if r < style.pronoun + style.name:
            first, gender = rng.choice(onto.first)
            name = (first, rng.choice(onto.last)) if rng.random() < 0.5 else (first,)
            return NP("name", name=name, entity="PER", gender=gender)
        if r < style.pronoun + style.name + style.org:
            name = tuple(rng.sample(onto.orgs, rng.choice((1, 1, 2))))
            return NP("org", rng.choice(onto.generics), name=name, entity="ORG")
    elif cls == "place" and r < style.name:
        place, gender = rng.choice(onto.places)
        return NP("name", name=(place,), entity="LOC", gender=gender)
    number = "pl" if rng.random() < 0.3 else "sg"
    count = None
    if number == "sg":
        det = rng.choices(("def", "indef", "dem", None), (0.55, 0.3, 0.1, 0.05))[0]
    else:
        det = rng.choices(("def", "dem", None), (0.5, 0.1, 0.4))[0]
        if det is None and rng.random() < style.number * 3:
            count = rng.randint(2, NUMBER_WORDS) if rng.random() < 0.6 else str(rng.randint(2, 999))
    noun = noun or onto.nouns[cls].pick(rng)
    adjectives = ()
    for share in (style.adjective, style.adjective / 3):
        if rng.random() >= share:
            break
        pool = onto.noun_adjectives[noun] if rng.random() < style.preference else onto.adjectives[cls]
        adjectives += (pool.pick(rng),)
    demonym = rng.choice(onto.places)[0] if rng.random() < style.demonym else None
    of = None
    if depth == 0 and rng.random() < 0.08:
        associate = onto.noun_associates[noun].pick(rng)
        of = _np(onto, style, rng, onto.noun_class[associate], depth + 1, noun=associate)
    return NP("noun", noun, number, det, tuple(dict.fromkeys(adjectives)), demonym, count, of=of)
