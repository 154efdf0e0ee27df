"""The synthetic world's latent grammar: an ontology, abstract sentences, and their realisation per language.

An abstract sentence (clauses of noun phrases over shared concepts) is drawn once and realised in
any language: each language orders the constituents its own way (adjective placement, verb second
and verb-final clauses, clitic objects, pro-drop, negation), inflects (number, gender, case, person,
tense) and writes its own words. A translation pair is one abstract sentence realised twice.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

from distgem.world.lexicon import (
    ADPOSITIONS,
    CONJUNCTIONS,
    FOREIGN,
    INTERJECTIONS,
    NUMBER_WORDS,
    PRONOUN_PERSON,
    PRONOUNS,
    SUBORDINATORS,
    Lexicon,
    transliterate,
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


@dataclass
class Word:
    """One syntactic word of a realised sentence; `key`/`head` are ids within the sentence."""

    form: str
    lemma: str
    upos: str
    feats: tuple[str, ...]
    key: int
    head: int = 0
    deprel: str = "dep"
    entity: str = "O"
    fused: str | None = None  # on the first of two words written as one token (du = de le)


@dataclass
class Realiser:
    """Writes abstract sentences in one language."""

    lex: Lexicon
    rng: random.Random
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def sentence(self, s: Sentence) -> list[Word]:
        self.counter = itertools.count(1)
        p = self.lex.profile
        words, root = self._clause(s.main, subordinate=False)
        if s.interjection:
            intj = self._word(self.lex.function[("INTJ", s.interjection)], "INTJ", head=root, deprel="discourse")
            words = [intj, self._punct(",", intj.key)] + words
        if s.link:
            kind, conj, clause = s.link
            more, head = self._clause(clause, subordinate=kind == "sc")
            link = self._word(
                self.lex.function[("CCONJ" if kind == "cc" else "SCONJ", conj)],
                "CCONJ" if kind == "cc" else "SCONJ",
                head=head,
                deprel="cc" if kind == "cc" else "mark",
            )
            comma = (
                kind == "sc" and (p.verb_second or self.lex.lang == "ru") or kind == "cc" and self.rng.random() < 0.3
            )
            words += ([self._punct(",", head)] if comma else []) + [link] + more
            self._attach(head, root, "conj" if kind == "cc" else ("ccomp" if conj == "that" else "advcl"), more)
        if s.foreign:
            words.append(self._word(self.lex.function[("X", s.foreign)], "X", head=root, deprel="dep"))
        words.append(self._punct(s.punct, root))
        first = words[0]
        first.form, first.fused = _capitalise(first.form), first.fused and _capitalise(first.fused)
        return words

    def _word(
        self,
        form: str,
        upos: str,
        lemma: str | None = None,
        feats: tuple[str, ...] = (),
        head: int = 0,
        deprel: str = "dep",
        entity: str = "O",
    ) -> Word:
        return Word(
            form, lemma if lemma is not None else form.lower(), upos, feats, next(self.counter), head, deprel, entity
        )

    def _punct(self, mark: str, head: int) -> Word:
        return self._word(mark, "PUNCT", head=head, deprel="punct")

    @staticmethod
    def _attach(key: int, head: int, deprel: str, words: list[Word]) -> None:
        for w in words:
            if w.key == key:
                w.head, w.deprel = head, deprel

    def _clause(self, c: Clause, subordinate: bool) -> tuple[list[Word], int]:
        lex, p, rng = self.lex, self.lex.profile, self.rng
        person = PRONOUN_PERSON[c.subject.head] if c.subject.kind == "pron" else (2 if c.subject.number == "sg" else 5)
        aux, tense = c.aux, c.tense
        if aux == "has" and p.participle is None:
            aux, tense = None, "past"  # no perfect (Russian): the simple past says it
        if aux is None and c.negated and p.negation == "after_aux":
            aux = "do"  # do-support
        form = "part" if aux == "has" else ("bare" if aux else tense)
        verb_form = "Fin" if form in ("pres", "past") or p.bare_is_finite else ("Part" if form == "part" else "Inf")
        feats = (f"VerbForm={verb_form}",) + (
            _person(person) + (f"Tense={tense.capitalize()}",) if verb_form == "Fin" and not aux else ()
        )
        verb = self._word(lex.verb(c.verb, form, person), "VERB", lex.lemma("VERB", c.verb), feats, deprel="root")
        v = verb.key
        fin = verb
        if aux:
            stem = lex.function[("AUX", aux)]
            aux_form = lex.auxiliary(aux, person) if aux != "do" or tense == "pres" else stem + p.past[person]
            fin = self._word(aux_form, "AUX", stem, ("VerbForm=Fin",) + _person(person), head=v, deprel="aux")
        neg_pre, neg_post = [], []
        if c.negated:
            neg = self._word(lex.function[("PART", "neg")], "PART", feats=("Polarity=Neg",), head=v, deprel="advmod")
            if p.negation == "wrap":
                neg_pre, neg_post = (
                    [neg],
                    [
                        self._word(
                            lex.function[("PART", "neg2")], "PART", feats=("Polarity=Neg",), head=v, deprel="advmod"
                        )
                    ],
                )
            elif p.negation == "before":
                neg_pre = [neg]
            else:
                neg_post = [neg]
        dropped = c.subject.kind == "pron" and rng.random() < p.pro_drop
        subject = [] if dropped else self._np(c.subject, "nom", v, "nsubj")
        obj = self._np(c.object, "acc", v, "obj") if c.object else []
        clitic = obj if c.object and c.object.kind == "pron" and p.clitic_objects else []
        if clitic:
            obj = []
        pps = [self._pp(adp, np, v, "obl") for adp, np in c.pps]
        adverb = [self._word(lex.stems[c.adverb], "ADV", head=v, deprel="advmod")] if c.adverb else []
        nonfinite = [verb] if aux else []
        if not p.verb_second:
            before = adverb if p.adverb == "before_verb" else []
            after = adverb if p.adverb == "after_verb" else []
            end = adverb if p.adverb == "end" else []
            words = (
                subject + before + neg_pre + clitic + [fin] + neg_post + nonfinite + after + obj + sum(pps, []) + end
            )
        elif subordinate:  # verb-final: ... dass er den Hund sehen wird
            words = subject + obj + sum(pps, []) + adverb + neg_post + [verb] + ([fin] if aux else [])
        else:
            middle = [adverb] + pps if adverb else pps
            front = middle.pop(0) if middle and subject and rng.random() < 0.25 else None
            if front is None:
                words = subject + [fin] + obj + sum(middle, []) + neg_post + nonfinite
            else:  # verb second: a fronted adverbial puts the subject after the finite verb
                words = front + [fin] + subject + obj + sum(middle, []) + neg_post + nonfinite
        return words, v

    def _pp(self, adp: str, np: NP, head: int, deprel: str) -> list[Word]:
        lex = self.lex
        inner = self._np(np, "acc", head, deprel)
        noun = next(w.key for w in inner if w.head == head)
        case = self._word(lex.function[("ADP", adp)], "ADP", head=noun, deprel="case")
        if (
            ("FUSED", adp) in lex.function
            and inner[0].upos == "DET"
            and np.det == "def"
            and np.number == "sg"
            and lex.genders.get(np.head, 0) == 0
            and np.kind == "noun"
        ):
            case.fused = lex.function[("FUSED", adp)]
        return [case] + inner

    def _np(self, np: NP, case: str, head: int, deprel: str) -> list[Word]:
        """Words of a noun phrase in this language's order; its head attaches to `head` as `deprel`."""
        lex, p = self.lex, self.lex.profile
        case_feat = (f"Case={case.capitalize()}",)
        if np.kind == "pron":
            person = PRONOUN_PERSON[np.head]
            return [
                self._word(
                    lex.function[("PRON", np.head, case)],
                    "PRON",
                    lex.function[("PRON", np.head, "nom")],
                    case_feat + _person(person) + ("PronType=Prs",),
                    head,
                    deprel,
                )
            ]
        if np.kind == "quant":
            sym = self._word("%", "SYM", head=head, deprel=deprel)
            return [self._word(str(np.count), "NUM", feats=("NumType=Card",), head=sym.key, deprel="nummod"), sym]
        if np.kind in ("name", "org"):
            tokens = list(np.name)
            if np.kind == "org":
                generic = _capitalise(lex.noun(np.head, "sg"))
                tokens = [generic] + tokens if p.org_generic_first else tokens + [generic]
            words = [
                self._word(t, "PROPN", t, ("Number=Sing",), head, deprel, ("B-" if i == 0 else "I-") + np.entity)
                for i, t in enumerate(tokens)
            ]
            for w in words[1:]:
                w.head, w.deprel = words[0].key, "flat"
            article = (
                lex.article("def", "sg", np.gender, case)
                if p.article_with_names or (np.kind == "org" and p.org_generic_first)
                else None
            )
            if article:
                words.insert(
                    0, self._word(article, "DET", feats=_det_feats("def", "sg"), head=words[0].key, deprel="det")
                )
            return words
        gender = lex.genders[np.head]
        agree = (f"Number={'Sing' if np.number == 'sg' else 'Plur'}",) + (
            (f"Gender={'Masc Fem Neut'.split()[gender]}",) if p.genders > 1 else ()
        )
        form = lex.noun(np.head, np.number, case)
        noun = self._word(
            _capitalise(form) if p.capitalise_nouns else form,
            "NOUN",
            lex.lemma("NOUN", np.head),
            agree + (case_feat if p.genders == 3 else ()),
            head,
            deprel,
        )
        pre, post = [], []
        if np.det:
            article = lex.article(np.det, np.number, gender, case)
            if article:
                pre.append(
                    self._word(
                        article,
                        "DET",
                        lex.article(np.det, "sg", 0, "nom"),
                        agree + _det_feats(np.det, np.number),
                        noun.key,
                        "det",
                    )
                )
        if np.count is not None:
            form = np.count if isinstance(np.count, str) else lex.function[("NUM", np.count)]
            pre.append(self._word(form, "NUM", feats=("NumType=Card",), head=noun.key, deprel="nummod"))
        for adjective in np.adjectives:
            word = self._word(
                lex.adjective(adjective, gender, np.number), "ADJ", lex.lemma("ADJ", adjective), agree, noun.key, "amod"
            )
            (post if adjective in lex.postnominal else pre).append(word)
        if np.demonym:
            word = self._word(
                self._demonym(np.demonym, gender, np.number),
                "ADJ",
                feats=agree,
                head=noun.key,
                deprel="amod",
                entity="B-MISC",
            )
            (post if p.adj_after_noun > 0.5 else pre).append(word)
        of = self._pp("of", np.of, noun.key, "nmod") if np.of else []
        return pre + [noun] + post + of

    def _demonym(self, place: str, gender: int, number: str) -> str:
        p = self.lex.profile
        stem = transliterate(place, p.script) + p.demonym
        word = self.lex.inflect_adjective(stem, gender, number)
        return _capitalise(word) if self.lex.lang in ("en", "nl") else word.lower()


def _person(person: int) -> tuple[str, ...]:
    return (f"Number={'Sing' if person < 3 else 'Plur'}", f"Person={person % 3 + 1}")


def _det_feats(kind: str, number: str) -> tuple[str, ...]:
    if kind == "dem":
        return ("PronType=Dem",)
    return (f"Definite={'Def' if kind == 'def' else 'Ind'}", "PronType=Art")


def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]
