"""Tokenizers the tests build locally (no hub): a WordPiece (mBERT-like) and a SentencePiece-style Unigram
(XLM-R-like)."""

from __future__ import annotations

import functools

CORPUS = [
    "the cat sat on the mat",
    "a dog runs in the park",
    "el gato se sentó en la alfombra",
    "le chat est sur le tapis",
    "Η γάτα κάθισε στο χαλί",
    "кошка сидела на коврике",
    "die Katze sitzt auf der Matte",
    "de kat zit op de mat",
    "Maria lives in Madrid since 1999 .",
] * 10


@functools.lru_cache(maxsize=None)
def wordpiece():
    from distgem.world import wordpiece

    return wordpiece.bert_tokenizer(wordpiece.cased_vocabulary(CORPUS, 120))


@functools.lru_cache(maxsize=None)
def sentencepiece():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


TOKENIZERS = {"wordpiece": wordpiece, "sentencepiece": sentencepiece}
