"""Realisation: an abstract sentence written in one language.

Each language orders the constituents its own way (adjective placement, verb second and verb-final
clauses, clitic objects, pro-drop, negation), inflects (number, gender, case, person, tense) and
writes its own words; `distgem.world.grammar` draws the abstract sentences this module writes.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from distgem.world.grammar import NP, Clause, Sentence
from distgem.world.lexicon import PRONOUN_PERSON, Lexicon, transliterate


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
