"""Tiny random Hugging Face models with tokenizers built offline, saved as ordinary model
directories: stand-ins for real checkpoints in tests (no hub access, load in milliseconds)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def word_tokenizer(words: Iterable[str], *, lowercase: bool = True, bert_frame: bool = True) -> Any:
    """A word-level fast tokenizer over ``words`` with BERT's special tokens (and, when
    ``bert_frame``, ``[CLS] ... [SEP]`` around every sequence)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*specials, *words]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert_frame:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def corpus_words(texts: Sequence[str]) -> list[str]:
    """The distinct lower-cased words and punctuation of ``texts``, in order of appearance."""
    import re

    return list(dict.fromkeys(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())))


def tiny_bert(
    path: str | Path, words: Iterable[str], *, masked_lm: bool = False, hidden: int = 32, layers: int = 2, seed: int = 0
) -> Path:
    """Save a random BERT encoder (or masked LM) of width ``hidden`` with a word tokenizer over ``words``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    path = Path(path)
    tokenizer = word_tokenizer(words)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (BertForMaskedLM if masked_lm else BertModel)(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
