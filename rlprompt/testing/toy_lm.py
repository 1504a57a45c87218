"""A tiny causal LM and a toy sentiment task, built offline, for fine-tuning on any machine.

:func:`build_toy_causal_lm` writes a 2-layer GPT-2 with a word-level tokenizer of fewer than
64 tokens over :data:`TOY_WORDS`, randomly initialised from a fixed seed, as an ordinary model
directory (``experiments/models/toy-causal-lm`` is one, made by
``python -m rlprompt.testing.toy_lm experiments/models/toy-causal-lm``); tests get a cached
copy from :func:`toy_model_path`.
With so small a vocabulary a random model samples the label words ``negative``/``positive``
often enough for RL to get a signal, which a 50k-token model would not. Weights start at
std 0.1 (GPT-2 uses 0.02): with tied 64-wide embeddings that small, no LoRA update could
lift a token's probability much above 0.09, since the final layer norm bounds the logits.

:func:`toy_sentiment_splits` makes the matching task: short sentences of filler words and
one or two sentiment words of one polarity, labelled by that polarity.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from rlprompt.io import cache_dir

POSITIVE = ["good", "great", "fun", "nice", "happy", "love"]
NEGATIVE = ["bad", "awful", "dull", "sad", "boring", "hate"]
FILLERS = ["the", "a", "movie", "film", "plot", "is", "and", "so", "very", "this", "story", "cast"]
LABEL_WORDS = ["negative", "positive"]
TEMPLATE_WORDS = ["it", "was", "answer", ":", "review", "sentiment"]
TOY_WORDS = POSITIVE + NEGATIVE + FILLERS + LABEL_WORDS + TEMPLATE_WORDS
SPECIALS = ["[PAD]", "[UNK]", "[EOS]"]
_VERSION = "v2"


def toy_model_path() -> Path:
    """A cached directory of the toy model (under ``$RLPROMPT_CACHE``), built on first use (atomically)."""
    path = cache_dir() / f"toy-causal-lm-{_VERSION}"
    if not (path / "config.json").is_file():
        build_toy_causal_lm(path)
    return path


def build_toy_tokenizer():
    """A lower-casing word-level tokenizer over :data:`TOY_WORDS` (no special tokens added)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + TOY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]", bos_token="[EOS]"
    )


def build_toy_causal_lm(path: Path, seed: int = 0) -> Path:
    """Write the toy GPT-2 (2 layers, width 64) and its tokenizer to ``path``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_toy_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tokenizer),
                n_layer=2,
                n_embd=64,
                n_head=2,
                n_positions=64,
                initializer_range=0.1,
                bos_token_id=tokenizer.eos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, path)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def toy_sentiment_splits(sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """Seeded (sentence, label) lists per split; label 1 = positive words, 0 = negative."""
    sizes = sizes or {"train": 64, "dev": 64, "test": 128}
    rng = np.random.default_rng(seed)
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, n in sizes.items():
        rows = []
        for i in range(n):
            label = i % 2
            words = list(rng.choice(FILLERS, size=int(rng.integers(2, 5))))
            pool = POSITIVE if label else NEGATIVE
            for word in rng.choice(pool, size=int(rng.integers(1, 3)), replace=False):
                words.insert(int(rng.integers(0, len(words) + 1)), str(word))
            rows.append((" ".join(words), label))
        splits[split] = rows
    return splits


def write_toy_sentiment(directory: Path, seed: int = 0) -> Path:
    """Write :func:`toy_sentiment_splits` as ``train/dev/test.tsv`` (sentence, label)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in toy_sentiment_splits(seed=seed).items():
        lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in rows]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def toy_sentiment_path() -> Path:
    """A cached directory of :func:`write_toy_sentiment` (under ``$RLPROMPT_CACHE``)."""
    path = cache_dir() / f"toy-sentiment-{_VERSION}"
    if not (path / "test.tsv").is_file():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_toy_sentiment(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def toy_lm_config(overrides: list[str] | None = None):
    """A classification config on the toy LM and toy sentiment data (calibrated; ``overrides``
    as ``key=value``): label words matter to it, which makes it the label-word env's toy task."""
    from rlprompt.config import load_config

    base = [
        "task_model.kind=causal_lm",
        f"task_model.name_or_path={toy_model_path()}",
        "task_model.device=cpu",
        f"data.dir={toy_sentiment_path()}",
        "template=review : {sentence} {prompt}",
        "prompt=sentiment :",
        "verbalizers=[' negative', ' positive']",
        "calibration=batch",
        "reward.name=accuracy",
    ]
    return load_config(None, base + list(overrides or []))


if __name__ == "__main__":  # python -m rlprompt.testing.toy_lm DIR
    import sys

    print(build_toy_causal_lm(Path(sys.argv[1])))
