"""Per-input demonstrations by retrieval: each input is shown its k most similar pool examples.

The strong baseline of in-context example selection (Liu et al., "What Makes Good In-Context
Examples for GPT-3?", DeeLIO 2022): embed the demonstration pool once with a sentence encoder
(all-MiniLM-L6-v2, embedded), and give each input the ``k`` pool examples whose embeddings are
closest to its own (cosine), ordered so that the most similar one stands last, nearest the input
(``order: similar_last``, Liu et al.'s better order) or first. ``balanced`` takes ``k / C`` of each
class instead (classification). An input is never shown itself: a pool example the input's text
appears in (:func:`rlprompt.template.shows_input`) is never retrieved for it.

A :class:`DemoRetriever` is the reusable artefact: :meth:`DemoRetriever.save` writes one JSON file
(pool, settings, embeddings, the model template) and ``DemoRetriever.load(path).prompt(x)`` gives
a new input's demonstration block, ``.text(x)`` the whole model input.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import atomic_write_json, read_json
from rlprompt.template import DemoPool, example_fields, render, shows_input

ORDERS = ("similar_last", "similar_first")
"""Where the most similar demonstration stands: last (next to the input) or first."""
FORMAT = "rlprompt-demo-retriever"
VERSION = 1
CHUNK = 256
"""Inputs whose similarities to the pool are computed at once."""


def _stripped(example: str | Mapping[str, str]) -> dict[str, str]:
    return {k: v.strip() for k, v in example_fields(example).items()}


def query_text(example: str | Mapping[str, str]) -> str:
    """What is embedded of an input: its text, or its fields' values one per line in order."""
    return "\n".join(example_fields(example).values())


def check_retrieval(k: int, order: str, balanced: bool, pool: DemoPool) -> None:
    """One :class:`ConfigError` for settings this pool cannot serve."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"retrieval needs k >= 1 demonstrations per input, got {k!r}")
    if order not in ORDERS:
        raise ConfigError(f"demos.order must be one of {', '.join(ORDERS)}, got {order!r}")
    if k >= len(pool):
        raise ConfigError(
            f"retrieval of k={k} demonstrations needs a pool of more than {k} examples (an input is "
            f"never shown itself); the pool has {len(pool)}"
        )
    if balanced:
        classes = pool.num_classes
        if classes == 0:
            raise ConfigError(
                "demos.balanced takes k / C demonstrations of each class: a generation pool has no classes"
            )
        if k % classes:
            raise ConfigError(
                f"demos.balanced takes k / C demonstrations of each class: k={k} is not a multiple "
                f"of the {classes} classes"
            )
        counts = np.bincount([int(label) for label in pool.labels], minlength=classes)  # type: ignore[arg-type]
        if counts.min() <= k // classes:
            raise ConfigError(
                f"demos.balanced with k={k} needs more than {k // classes} pool examples of every "
                f"class; the pool has {counts.tolist()} per class"
            )


def is_retriever_file(path: Path) -> bool:
    try:
        data = read_json(path, "retriever file")
    except RLPromptError:
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def check_retriever_target(path: str | os.PathLike[str]) -> None:
    """A retriever may be written to a new ``.json`` file or over an earlier retriever file only
    (one :class:`ConfigError` otherwise: rlprompt never replaces another file)."""
    path = Path(path)
    if path.suffix != ".json":
        raise ConfigError(f"a retriever is saved as one JSON file: name it *.json, got {path}")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError(f"{path} exists and is not a file; choose another path")
    if path.exists() and not is_retriever_file(path):
        raise ConfigError(
            f"{path} exists and is not a retriever file of rlprompt; rlprompt never replaces it (choose another path)"
        )


class DemoRetriever:
    """The ``k`` nearest pool examples of each input, as pool ids and as demonstration blocks.

    ``embeddings[i]`` is pool example ``i``'s unit-length embedding; ``encoder`` embeds new
    inputs (loaded from ``encoder_name`` on first use when not given); ``template`` is the model
    template the blocks fill (its ``{prompt}`` slot), used by :meth:`text`."""

    def __init__(
        self,
        pool: DemoPool,
        embeddings: torch.Tensor,
        *,
        k: int,
        order: str = "similar_last",
        balanced: bool = False,
        encoder_name: str = "embedded:minilm",
        encoder: Any = None,
        template: str | None = None,
    ) -> None:
        check_retrieval(k, order, balanced, pool)
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        if embeddings.dim() != 2 or embeddings.shape[0] != len(pool):
            raise ConfigError(
                f"a retriever needs one embedding per pool example: {len(pool)} examples, "
                f"embeddings of shape {list(embeddings.shape)}"
            )
        if not torch.isfinite(embeddings).all():
            raise ConfigError("the pool's embeddings hold NaN or inf")
        self.pool, self.embeddings = pool, torch.nn.functional.normalize(embeddings, dim=-1)
        self._pool_fields = [_stripped(x) for x in pool.examples]
        self.k, self.order, self.balanced = k, order, balanced
        self.encoder_name, self._encoder, self.template = encoder_name, encoder, template

    @classmethod
    def build(
        cls,
        pool: DemoPool,
        encoder: Any,
        *,
        k: int,
        order: str = "similar_last",
        balanced: bool = False,
        template: str | None = None,
    ) -> DemoRetriever:
        """Embed ``pool``'s inputs with ``encoder`` (a :class:`~rlprompt.task_models.embedding.SentenceEncoder`)."""
        check_retrieval(k, order, balanced, pool)
        embeddings = encoder.encode([query_text(x) for x in pool.examples])
        name = str(getattr(encoder, "name_or_path", "embedded:minilm"))
        if Path(name).exists():  # a local checkpoint: saved files name it wherever they are read
            name = str(Path(name).resolve())
        return cls(
            pool, embeddings, k=k, order=order, balanced=balanced, encoder_name=name, encoder=encoder, template=template
        )

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from rlprompt.task_models.embedding import SentenceEncoder

            self._encoder = SentenceEncoder(self.encoder_name)
        return self._encoder

    # ------------------------------------------------------------ retrieval

    def select(
        self, inputs: Sequence[str | Mapping[str, str]], embeddings: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Pool ids of each input's demonstrations, in the order shown. ``embeddings`` are the
        inputs' own (computed by the encoder when None)."""
        inputs = list(inputs)
        if not inputs:
            return []
        if embeddings is None:
            embeddings = self.encoder.encode([query_text(x) for x in inputs])
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        if embeddings.shape != (len(inputs), self.embeddings.shape[1]):
            raise ConfigError(
                f"{len(inputs)} inputs need embeddings of shape {[len(inputs), self.embeddings.shape[1]]}, "
                f"got {list(embeddings.shape)}"
            )
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        out = []
        for start in range(0, len(inputs), CHUNK):  # a bounded similarity matrix, whatever the sizes
            similarity = (embeddings[start : start + CHUNK] @ self.embeddings.T).numpy()
            for row, example in zip(similarity, inputs[start : start + CHUNK], strict=True):
                out.append(self._nearest(row, example))
        return out

    def _nearest(self, similarity: np.ndarray, example: str | Mapping[str, str]) -> list[int]:
        """The ``k`` most similar pool examples (``k / C`` of each class with ``balanced``) that
        are not the input itself and that, put together, do not show it; in the configured order."""
        fields = _stripped(example)
        ranked = np.argsort(-similarity.astype(np.float64), kind="stable")
        per_class = self.k // self.pool.num_classes if self.balanced else self.k
        counts: dict[int | None, int] = {}
        chosen: list[int] = []
        for i in ranked:
            i = int(i)
            label = self.pool.labels[i] if self.balanced else None
            if counts.get(label, 0) >= per_class or self._pool_fields[i] == fields:
                continue
            block = "".join(self.pool.texts[j] for j in chosen) + self.pool.texts[i]
            if shows_input(block, example):  # never the input itself, alone or pieced together
                continue
            chosen.append(i)
            counts[label] = counts.get(label, 0) + 1
            if len(chosen) == self.k:
                break
        if len(chosen) < self.k:
            raise RLPromptError(
                f"input {query_text(example)[:60]!r}: only {len(chosen)} of the pool's examples can be "
                f"shown to it without showing the input itself; k={self.k} needs more"
            )
        chosen.sort(key=lambda j: -similarity[j])  # most similar first
        return chosen[::-1] if self.order == "similar_last" else chosen

    def blocks(self, inputs: Sequence[str | Mapping[str, str]], embeddings: torch.Tensor | None = None) -> list[str]:
        """Each input's demonstration block (what fills the ``{demos}`` slot)."""
        return [self.pool.render(ids) for ids in self.select(inputs, embeddings)]

    def prompt(self, example: str | Mapping[str, str]) -> str:
        """One input's demonstration block."""
        return self.blocks([example])[0]

    def text(self, example: str | Mapping[str, str]) -> str:
        """The whole model input for ``example``: the template with its demonstrations and fields
        (what the task model scores, before the label word)."""
        if self.template is None:
            raise ConfigError("this retriever was built without a template: give template= to build() or use prompt()")
        return render(self.template, {"prompt": self.prompt(example), **example_fields(example)}, strict=True)

    # ------------------------------------------------------------ the artefact

    def to_dict(self) -> dict[str, Any]:
        data = np.ascontiguousarray(self.embeddings.numpy().astype("<f4")).tobytes()
        return {
            "format": FORMAT,
            "version": VERSION,
            "k": self.k,
            "order": self.order,
            "balanced": self.balanced,
            "encoder": self.encoder_name,
            "template": self.template,
            "demo_template": self.pool.demo_template,
            "examples": self.pool.examples,
            "answers": self.pool.answers,
            "labels": self.pool.labels,
            "embeddings": {
                "shape": list(self.embeddings.shape),
                "dtype": "float32-le",
                "sha256": hashlib.sha256(data).hexdigest(),
                "base64": base64.b64encode(data).decode(),
            },
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the retriever to one JSON file (atomically; a new file or an earlier retriever's
        only, never another file); :meth:`load` reads it back."""
        path = Path(path)
        check_retriever_target(path)
        atomic_write_json(path, self.to_dict(), compact=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], encoder: Any = None) -> DemoRetriever:
        """A retriever saved by :meth:`save` (``encoder``: an already loaded one for new inputs)."""
        data = read_json(path, "retriever file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a retriever saved by rlprompt (no format '{FORMAT}')")
        if data.get("version") != VERSION:
            raise ConfigError(f"{path}: retriever format version {data.get('version')!r} is not {VERSION}")
        try:
            blob = data["embeddings"]
            raw = base64.b64decode(blob["base64"])
            if hashlib.sha256(raw).hexdigest() != blob["sha256"]:
                raise ConfigError(f"{path}: the embeddings do not match their sha256 (the file is damaged)")
            embeddings = torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(blob["shape"]).copy())
            pool = DemoPool(data["demo_template"], data["examples"], data["answers"], data["labels"])
            return cls(
                pool,
                embeddings,
                k=data["k"],
                order=data["order"],
                balanced=data["balanced"],
                encoder_name=data["encoder"],
                encoder=encoder,
                template=data["template"],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is a damaged retriever file ({type(exc).__name__}: {exc})") from None


__all__ = ["ORDERS", "DemoRetriever", "check_retrieval", "check_retriever_target", "query_text"]
