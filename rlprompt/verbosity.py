"""How much the libraries under rlprompt print.

By default rlprompt keeps the Hugging Face libraries quiet while it loads and runs models:
no ``Loading weights: 100%|...`` bars, no info lines, no advisory FutureWarning /
DeprecationWarning / UserWarning lines from transformers, peft, trl, accelerate, datasets,
huggingface_hub or torch. Errors still surface (as rlprompt errors). ``rlprompt -v ...``,
``RLPROMPT_VERBOSE=1`` or :func:`set_verbose` (Python) shows all of it again.

:func:`quiet_libraries` is a context manager: what it silences is restored when the block
ends, so a user's own transformers settings outside rlprompt's calls are left as they were.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator

LIBRARIES = (
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "torch",
    "sentence_transformers",
    "safetensors",
)
"""The packages whose output :func:`quiet_libraries` hides."""

_verbose: bool | None = None


def set_verbose(flag: bool | None) -> None:
    """Show (True) or hide (False) the libraries' bars, info lines and advisory warnings;
    None goes back to ``$RLPROMPT_VERBOSE``."""
    global _verbose
    _verbose = flag


def verbose() -> bool:
    """Whether the libraries' own output is shown (``set_verbose``, else ``$RLPROMPT_VERBOSE``)."""
    if _verbose is not None:
        return _verbose
    return os.environ.get("RLPROMPT_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


def _silence_transformers() -> Callable[[], None]:
    """Hide transformers' progress bars and log lines (only if it is imported: nothing is
    imported here); returns what restores them."""
    if "transformers" not in sys.modules:
        return lambda: None
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    def restore() -> None:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()

    return restore


def _silence_hub() -> Callable[[], None]:
    if "huggingface_hub" not in sys.modules:
        return lambda: None
    from huggingface_hub import utils as hub_utils

    disabled = hub_utils.are_progress_bars_disabled()
    hub_utils.disable_progress_bars()
    return (lambda: None) if disabled else hub_utils.enable_progress_bars


def _silence_loggers() -> Callable[[], None]:
    """The standard-library loggers of the libraries at ERROR (peft, trl and accelerate log there)."""
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.ERROR))

    def restore() -> None:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)

    return restore


@contextlib.contextmanager
def quiet_libraries(import_transformers: bool = False) -> Iterator[None]:
    """Inside the block the libraries print no progress bars, info lines or advisory warnings
    (unless :func:`verbose`). ``import_transformers`` imports it first, for blocks that will."""
    if verbose():
        yield
        return
    if import_transformers:
        import transformers  # noqa: F401 - its bars are switched off before the block loads a model
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", category)
        for library in LIBRARIES:
            warnings.filterwarnings("ignore", category=UserWarning, module=rf"{library}(\.|$)")
        restores = [_silence_transformers(), _silence_hub(), _silence_loggers()]
        try:
            yield
        finally:
            for restore in reversed(restores):
                restore()
