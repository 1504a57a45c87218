"""Key/value caches of shared prefixes, and forward passes that continue from them.

Scoring (prompt, example) pairs on a causal LM recomputes what pairs share: every prompt
re-reads the same example when the prompt comes after it (``{sentence} {prompt}``), every
example re-reads the same prompt when the prompt comes first. :class:`PrefixCache` keeps
the key/value tensors of such prefixes (all layers in one tensor, least recently used
evicted past a memory bound) with the final hidden state of their last token;
:func:`continue_from` runs a batch of continuations, each on top of its own cached prefix
(right-padded to a common length and masked), and returns the hidden state before every
continuation token and after the last one.

A prefix is computed alone (a batch of one, no padding), so its cached values do not
depend on what else was scored with it: results are the same whether a prefix was cached or
not, which keeps resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch


@functools.cache
def _cache_argument(forward_owner: type[Any]) -> str:
    """The name a model class's ``forward`` takes its key/value cache by: ``cache`` in newer
    transformers (which deprecate ``past_key_values`` and remove it in 5.40), else
    ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(forward_owner.forward).parameters else "past_key_values"


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """``model``'s forward keyword for passing ``cache``, under either transformers naming."""
    owner = cast(type, type(model))  # a class is hashable (mypy does not see type[Any] as Hashable)
    return {_cache_argument(owner): cache}


def output_cache(out: Any) -> Any:
    """The key/value cache a forward returned (``cache`` or, in older transformers,
    ``past_key_values``), read without the deprecated alias's warning."""
    return out["cache"] if "cache" in out else out["past_key_values"]


@dataclass
class Prefix:
    """A cached prefix: ``kv`` ``[layers, 2, heads, length, head_dim]`` and the final hidden
    state of its last token ``[hidden]`` (which predicts the first continuation token)."""

    kv: torch.Tensor
    last_hidden: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.kv.shape[3])

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size() + self.last_hidden.numel() * self.last_hidden.element_size()


class PrefixCache:
    """An LRU of :class:`Prefix` entries bounded by ``max_bytes`` (0 keeps nothing across calls)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Prefix] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Prefix | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: Prefix, keep: set[Hashable] | None = None) -> None:
        """Insert ``entry``, then evict least recently used entries (but never those in ``keep``,
        which the running call still reads) until the cache fits its bound."""
        if key in self._entries:
            self.bytes -= self._entries.pop(key).nbytes
        self._entries[key] = entry
        self.bytes += entry.nbytes
        keep = keep or set()
        for old in list(self._entries):
            if self.bytes <= self.max_bytes:
                break
            if old not in keep:
                self.bytes -= self._entries.pop(old).nbytes

    def shrink(self) -> None:
        """Evict least recently used entries until the cache fits its bound (after a call whose
        rows needed more than the bound at once)."""
        while self._entries and self.bytes > self.max_bytes:
            _, entry = self._entries.popitem(last=False)
            self.bytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def _as_model_inputs(ids: torch.Tensor, soft: torch.Tensor | None, slot: torch.Tensor | None, model: Any) -> dict:
    if soft is None:
        return {"input_ids": ids}
    embeds = model.get_input_embeddings()(ids)
    mask = cast(torch.Tensor, slot)  # given with ``soft``: where its rows go
    return {"inputs_embeds": embeds.masked_scatter(mask.unsqueeze(-1), soft.to(embeds.dtype))}


def compute_prefix(
    base_model: Any, model: Any, ids: Sequence[int], soft: torch.Tensor | None = None, soft_at: int = 0
) -> Prefix:
    """The cache entry of one prefix: token ``ids`` with, if given, ``soft`` embedding rows
    ``[n, hidden]`` inserted before ``ids[soft_at]``."""
    device = model.get_input_embeddings().weight.device
    tokens = list(ids)
    slot = None
    if soft is not None:
        n = soft.shape[0]
        tokens = tokens[:soft_at] + [tokens[0] if tokens else 0] * n + tokens[soft_at:]
        slot = torch.zeros(1, len(tokens), dtype=torch.bool, device=device)
        slot[0, soft_at : soft_at + n] = True
    input_ids = torch.tensor([tokens], dtype=torch.long, device=device)
    out = base_model(**_as_model_inputs(input_ids, soft, slot, model), use_cache=True)
    cache = output_cache(out)
    kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])
    return Prefix(kv.contiguous(), out.last_hidden_state[0, -1].clone())


def continue_from(
    base_model: Any,
    model: Any,
    prefixes: Sequence[Prefix],
    ids: torch.Tensor,
    lengths: torch.Tensor,
    soft: torch.Tensor | None = None,
    slot: torch.Tensor | None = None,
    return_cache: bool = False,
) -> Any:
    """Hidden states ``[B, 1 + C, hidden]`` of continuations ``ids`` ``[B, C]`` (right-padded,
    real lengths ``lengths``) on top of ``prefixes``: position ``t`` holds the state that
    predicts continuation token ``t`` (position 0 is the prefix's last state).

    ``return_cache=True`` also returns the key/value cache of prefixes and continuations and
    its attention mask ``[B, longest prefix + C]``: what decoding goes on from."""
    from transformers import DynamicCache

    device = ids.device
    batch, width = ids.shape
    prefix_lengths = torch.tensor([p.length for p in prefixes], dtype=torch.long, device=device)
    longest = int(prefix_lengths.max())
    first = prefixes[0].kv
    past = torch.zeros(
        first.shape[0], 2, batch, first.shape[2], longest, first.shape[4], dtype=first.dtype, device=device
    )
    for b, prefix in enumerate(prefixes):
        past[:, :, b, :, : prefix.length] = prefix.kv
    cache = DynamicCache(ddp_cache_data=[(past[layer, 0], past[layer, 1]) for layer in range(past.shape[0])])
    columns = torch.arange(longest + width, device=device)[None, :]
    attention = (columns < prefix_lengths[:, None]) | ((columns >= longest) & (columns < longest + lengths[:, None]))
    positions = prefix_lengths[:, None] + torch.arange(width, device=device)[None, :]
    inputs = _as_model_inputs(ids, soft, slot, model)
    hidden = base_model(
        **inputs,
        attention_mask=attention.long(),
        position_ids=positions,
        use_cache=True,
        **with_cache(base_model, cache),
    ).last_hidden_state
    lasts = torch.stack([p.last_hidden for p in prefixes]).to(hidden.dtype)
    states = torch.cat([lasts[:, None, :], hidden], dim=1)
    return (states, cache, attention.long()) if return_cache else states
