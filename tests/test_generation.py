"""Generation tasks: metrics against hand-computed values and the reference implementations,
cached == uncached likelihoods, greedy generation == ``model.generate``, every env kind on a
generation task, run / eval --run / export end to end (tiny GPT-2), and SmolLM2 (slow tier).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from rlprompt.config import config_from_dict
from rlprompt.errors import ConfigError, DataError, RLPromptError
from rlprompt.experiment import record_outcomes
from rlprompt.rewards import generation as gm
from rlprompt.task import Task

ROWS = [
    {
        "id": str(i),
        "context": f"the film number {i} was {word} and the cast was {other}",
        "question": f"how was film {i} ?",
        "answers": [word, f"very {word}"],
    }
    for i, (word, other) in enumerate(
        [
            ("great", "bored"),
            ("terrible", "funny"),
            ("funny", "great"),
            ("bad", "wonderful"),
            ("wonderful", "bad"),
            ("boring", "warm"),
        ]
    )
]
TEMPLATES = {
    "prompt-after-input": "{context} {question} {prompt} answer:",
    "prompt-first": "{prompt} {context} {question} answer:",
}


HELD_OUT = {
    "id": "held-out",
    "context": "the film number 9 was fine and the cast was calm",
    "question": "how was film 9 ?",
    "answers": ["fine"],
}
"""A test row train and dev do not have: a test split equal to train is refused."""


def write_qa(directory: Path, rows: list[dict] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        items = [*(rows or ROWS), HELD_OUT] if split == "test" else rows or ROWS
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return directory


def gen_config(model_dir: Path, data_dir: Path, template: str = TEMPLATES["prompt-after-input"], **extra):
    data = {
        "task": "generation",
        "task_model": {"kind": "causal_lm", "name_or_path": str(model_dir), "cache_size": 0, "device": "cpu"},
        "data": {"dir": str(data_dir)},
        "template": template,
        "prompt": "it was",
        "generation": {"max_new_tokens": 4, "metrics": ["f1", "exact_match", "rougeL", "chrf"]},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(data)


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory) -> Path:
    return write_qa(tmp_path_factory.mktemp("qa"))


@pytest.fixture(scope="module")
def qa_task(tiny_clm_dir, qa_dir):
    return Task.from_config(gen_config(tiny_clm_dir, qa_dir))


# ------------------------------------------------------------------ metrics


def test_squad_metrics_match_hand_computed_values():
    # official normalisation: case, punctuation and articles do not count
    assert gm.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert gm.exact_match(["the Belgrade"], [["Belgrade"]]) == 1.0
    assert gm.exact_match(["Belgrade, Serbia"], [["Belgrade"]]) == 0.0
    # F1 "sent to belgrade" vs "belgrade": precision 1/3, recall 1 -> 0.5; best reference counts
    assert gm.f1(["sent to Belgrade"], [["Belgrade"]]) == pytest.approx(0.5)
    assert gm.f1(["sent to Belgrade"], [["Paris", "to Belgrade"]]) == pytest.approx(0.8)
    assert gm.f1(["a b", "x"], [["a b"], ["y"]]) == pytest.approx(0.5)  # mean over examples


def test_rouge_and_sacrebleu_metrics_match_the_reference_implementations():
    import sacrebleu
    from rouge_score import rouge_scorer

    predictions = ["the cat sat on the mat", "a quick brown dog"]
    references = [["the cat is on the mat", "a cat sat there"], ["the quick brown fox"]]
    scorer = rouge_scorer.RougeScorer(["rougeL", "rouge1"], use_stemmer=True)
    expected = (
        sum(
            max(scorer.score(r, p)["rougeL"].fmeasure for r in refs)
            for p, refs in zip(predictions, references, strict=True)
        )
        / 2
    )
    assert gm.rougeL(predictions, references) == pytest.approx(expected)
    # hand-computed ROUGE-1 of one pair: 5 of 6 unigrams shared both ways -> F = 5/6
    assert gm.rouge1(["the cat sat on the mat"], [["the cat is on the mat"]]) == pytest.approx(5 / 6)
    streams = [[references[0][0], references[1][0]], [references[0][1], references[1][0]]]
    assert gm.chrf(predictions, references) == pytest.approx(sacrebleu.corpus_chrf(predictions, streams).score)
    assert gm.bleu(predictions, references) == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score)
    assert gm.chrf(["same text"], [["same text"]]) == pytest.approx(100.0)


# ------------------------------------------------------------------ the task model


@pytest.mark.parametrize("layout", list(TEMPLATES))
def test_cached_likelihoods_equal_the_full_forward(tiny_clm_dir, qa_dir, layout):
    task = Task.from_config(gen_config(tiny_clm_dir, qa_dir, TEMPLATES[layout]))
    model = task.task_model
    assert model.prefix_caching
    examples, references = task.data.train.examples, task.data.train.references
    for prompts in (["it was", "so good"], ["so good", "the answer is"]):  # the second call reuses prefixes
        cached = model.log_likelihood(prompts, [examples, examples[:3]], [references, references[:3]])
        model.prefix_caching = False
        full = model.log_likelihood(prompts, [examples, examples[:3]], [references, references[:3]])
        model.prefix_caching = True
        assert all((a - b).abs().max() < 1e-4 for a, b in zip(cached, full, strict=True))
    assert model.prefix_cache.hits > 0
    soft = model.prompt_embeddings("it was")[None].repeat(2, 1, 1)
    soft[1] += 0.1
    cached = model.log_likelihood(soft, [examples, examples], [references, references])
    model.prefix_caching = False
    full = model.log_likelihood(soft, [examples, examples], [references, references])
    model.prefix_caching = True
    assert all((a - b).abs().max() < 1e-4 for a, b in zip(cached, full, strict=True))


def test_likelihood_is_the_mean_token_log_prob_of_the_best_reference(qa_task):
    model = qa_task.task_model
    example, refs = qa_task.data.train.examples[0], qa_task.data.train.references[0]
    pre, post = model.input_layout.encode_texts([example])[0]
    values = []
    for ref in refs:
        target = model.reference_ids(ref)
        ids = torch.tensor([pre + model.input_layout.prompt_ids("it was") + post + target])
        with torch.no_grad():
            log_probs = torch.log_softmax(model.model(ids).logits[0].float(), -1)
        positions = range(ids.shape[1] - len(target) - 1, ids.shape[1] - 1)
        values.append(sum(float(log_probs[p, t]) for p, t in zip(positions, target, strict=True)) / len(target))
    ours = float(model.log_likelihood(["it was"], [[example]], [[refs]])[0][0])
    assert ours == pytest.approx(max(values), abs=1e-4)
    assert model.reference_ids(refs[0])[-len(model.stop_suffix) :] == model.stop_suffix  # the newline ends it


@pytest.mark.parametrize("layout", list(TEMPLATES))
def test_greedy_generation_equals_model_generate_and_is_deterministic(tiny_clm_dir, qa_dir, layout):
    task = Task.from_config(gen_config(tiny_clm_dir, qa_dir, TEMPLATES[layout], generation={"stop": ["zzz"]}))
    model = task.task_model
    examples = task.data.train.examples
    ours = model.generate(["it was", "so good"], [examples, examples[:2]])
    for prompt, outputs in zip(["it was", "so good"], ours, strict=True):
        for example, output in zip(examples, outputs, strict=False):
            pre, post = model.input_layout.encode_texts([example])[0]
            ids = torch.tensor([pre + model.input_layout.prompt_ids(prompt) + post])
            reference = model.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=model.pad_id
            )
            assert output == model.tokenizer.decode(reference[0, ids.shape[1] :], skip_special_tokens=True).strip()
    model.clear_cache()
    model.prefix_caching = False  # the left-padded path gives the same outputs
    with warnings.catch_warnings(record=True) as caught:  # the cache goes by the installed transformers' name
        warnings.simplefilter("always")
        assert model.generate(["it was", "so good"], [examples, examples[:2]]) == ours
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]
    assert model.stats.generated_tokens > 0


@pytest.mark.parametrize("layout", list(TEMPLATES))
def test_finished_rows_leave_the_batch_without_changing_outputs(tiny_clm_dir, qa_dir, layout, monkeypatch):
    """Rows ending at different steps: the batch shrinks as they finish, and every output is
    the one generated for its row alone."""
    from transformers import DynamicCache

    task = Task.from_config(
        gen_config(tiny_clm_dir, qa_dir, TEMPLATES[layout], generation={"stop": ["zzz"], "max_new_tokens": 8})
    )
    model = task.task_model
    examples = task.data.train.examples
    sequences = []  # what each (prompt, example) row generates alone
    for prompt in ("it was", "so good"):
        for example in examples:
            pre, post = model.input_layout.encode_texts([example])[0]
            ids = torch.tensor([pre + model.input_layout.prompt_ids(prompt) + post])
            out = model.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=model.pad_id
            )
            sequences.append(out[0, ids.shape[1] :].tolist())

    def shrinks(eos: set[int]) -> bool:  # with these end-of-text ids, a quarter of the rows ends while others go on
        ends = [min((seq.index(t) for t in eos if t in seq), default=8) for seq in sequences]
        return any(0 < sum(e > step for e in ends) <= 0.75 * len(ends) for step in range(7))

    tokens = sorted({t for seq in sequences for t in seq})
    model.eos_ids = next(
        eos for eos in [{t} for t in tokens] + [{t, u} for t in tokens for u in tokens] if shrinks(eos)
    )
    selected = []
    original = DynamicCache.batch_select_indices
    monkeypatch.setattr(
        DynamicCache, "batch_select_indices", lambda self, keep: (selected.append(len(keep)), original(self, keep))[1]
    )
    together = model.generate(["it was", "so good"], [examples, examples])
    lengths = {len(text) for outputs in together for text in outputs}
    assert selected and len(lengths) > 1  # rows left the batch early, and outputs differ in length
    model.clear_cache()
    batch_size, model.generation.batch_size = model.generation.batch_size, 1
    try:
        alone = model.generate(["it was", "so good"], [examples, examples])
    finally:
        model.generation.batch_size = batch_size
    assert alone == together
    model.clear_cache()
    model.prefix_caching = False  # the left-padded path shrinks its batches too
    assert model.generate(["it was", "so good"], [examples, examples]) == together


def test_generation_with_an_empty_continuation_and_dict_answers(tiny_clm_dir, tmp_path):
    """A template ending in {prompt} with the empty prompt leaves nothing after the cached
    prefix: those rows are prefilled whole (same outputs). Answers in the Hugging Face squad
    layout ({"text": [...]}) load as references."""
    rows = [{**r, "answers": {"text": r["answers"], "answer_start": [0] * len(r["answers"])}} for r in ROWS]
    task = Task.from_config(
        gen_config(tiny_clm_dir, write_qa(tmp_path / "qa", rows), "{context} {question} {prompt}", prompt="")
    )
    assert task.data.train.references[0] == ROWS[0]["answers"]
    model = task.task_model
    examples = task.data.train.examples
    cached = model.generate(["", "so"], [examples, examples])
    model.clear_cache()
    model.prefix_caching = False
    assert model.generate(["", "so"], [examples, examples]) == cached


def test_generation_stops_at_stop_strings_and_remembers_outputs(tiny_clm_dir, qa_dir):
    task = Task.from_config(gen_config(tiny_clm_dir, qa_dir, task_model={"cache_size": 100}))
    model = task.task_model
    examples = task.data.train.examples[:2]
    full = model.generate(["it was"], [examples])[0]
    first_char = full[0][1] if len(full[0]) > 1 else full[0][0]
    model.clear_cache()
    model.generation.stop = [first_char]
    try:
        cut = model.generate(["it was"], [examples])[0]
    finally:
        model.generation.stop = ["\n"]
    assert first_char not in cut[0] and full[0].startswith(cut[0])
    calls = model.stats.lm_calls
    model.generate(["it was"], [examples])  # remembered: no new LM call
    assert model.stats.lm_calls == calls and model.stats.cache_hits >= 2


def test_stop_cut_skips_stops_in_leading_whitespace_only_when_asked():
    from rlprompt.task_models.sequences import stop_cut

    assert stop_cut("\nParis\nmore", ["\n"]) == 0
    assert stop_cut("\nParis\nmore", ["\n"], after_text=True) == 6
    assert stop_cut(" \n\n Paris. Q:", ["\n\n", "Q:"], after_text=True) == 11
    assert stop_cut("\n \n", ["\n"], after_text=True) == -1  # only whitespace so far: not ended
    assert stop_cut("Paris", ["P"], after_text=True) == 0  # a stop at the first character of text counts
    assert stop_cut("Paris", ["\n"]) == -1


def test_stop_after_text_lets_a_reply_opening_with_a_line_break_go_on(tiny_clm_dir, qa_dir, monkeypatch):
    """Every output made to open with a line break: with ``stop: ["\\n"]`` it is empty by
    default; with ``stop_after_text`` it is the text that follows."""
    task = Task.from_config(gen_config(tiny_clm_dir, qa_dir, generation={"stop": ["zzz"], "max_new_tokens": 6}))
    model = task.task_model
    examples = task.data.train.examples
    plain = model.generate(["it was"], [examples])[0]
    assert all(text and "\n" not in text for text in plain)
    decode = model.tokenizer.decode
    monkeypatch.setattr(model.tokenizer, "decode", lambda ids, **kw: ("\n" if len(ids) else "") + decode(ids, **kw))
    model.generation.stop = ["\n"]
    model.clear_cache()
    assert model.generate(["it was"], [examples])[0] == [""] * len(examples)
    model.generation.stop_after_text = True
    model.clear_cache()
    assert model.generate(["it was"], [examples])[0] == plain


# ------------------------------------------------------------------ envs, agents, runs


@pytest.mark.parametrize("kind", ["token", "selection", "edit", "soft"])
def test_every_env_kind_runs_on_a_generation_task(qa_task, kind):
    from gymnasium.utils.env_checker import check_env

    from rlprompt.envs import build_env
    from rlprompt.registry import ENVS

    fields = {
        "token": {"prompt_length": 2, "vocab_top_k": 20},
        "selection": {"candidates": ["it was", "the answer is", "so"]},
    }.get(kind, {})
    env = build_env(qa_task, ENVS[kind].config_class(kind=kind, batch_size=3, **fields))
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    done, info, reward = False, {}, 0.0
    while not done:  # to the end of an episode, where the prompt is scored
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
    metrics = info["metrics"]
    assert math.isfinite(reward) and math.isfinite(metrics["reward"]) and metrics["reward"] < 0  # a log-likelihood
    assert metrics["likelihood"] == metrics["reward"] and qa_task.batch_metric == "likelihood"


def test_run_eval_and_export_on_a_generation_task(tiny_clm_dir, qa_dir, tmp_path):
    from rlprompt.experiment import evaluate_run, run_experiment
    from rlprompt.export import export_run
    from rlprompt.results import RunResult

    candidates = tmp_path / "candidates.txt"
    candidates.write_text("it was\nthe answer is\nso\n")
    config = gen_config(
        tiny_clm_dir,
        qa_dir,
        agent={"name": "random_search"},
        env={"kind": "selection", "batch_size": 3, "candidates": str(candidates)},
        budget={"prompt_evals": 6},
        output={"plot": False, "tensorboard": False},
    )
    result = run_experiment(config, tmp_path / "run", progress=False)
    saved = RunResult.load(tmp_path / "run" / "best_prompt.json")
    assert saved.task == "generation" and saved.primary_metric == "f1"
    for split in ("train", "dev", "test"):
        assert set(saved.metrics[split]) >= {"f1", "exact_match", "rougeL", "chrf", "likelihood", "reward", "outputs"}
        assert set(saved.baseline["metrics"][split]) >= {"f1", "likelihood"}
    assert result.prompt in ("it was", "the answer is", "so")
    check = evaluate_run(tmp_path / "run", "test")
    assert check["reproduces"], check
    moved = evaluate_run(tmp_path / "run", "dev", [f"data.dir={write_qa(tmp_path / 'other', ROWS[:3])}"])
    assert moved["metrics"]["n"] == 3
    exported = json.loads(Path(export_run(tmp_path / "run", "json", tmp_path / "export.json")).read_text())
    assert exported["prompt"] == result.prompt and exported["task"] == "generation"
    assert exported["generation"]["metrics"][0] == "f1" and "verbalizers" not in exported
    # a run from before outcomes were kept gets the very records a new run writes
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "run", old)
    (old / "outcomes.json").unlink()
    record = json.loads((old / "best_prompt.json").read_text())
    del record["outcomes"]
    (old / "best_prompt.json").write_text(json.dumps(record))
    assert record_outcomes([old], echo=lambda *_: None) == [old]
    written = json.loads((old / "outcomes.json").read_text())
    assert written == json.loads((tmp_path / "run" / "outcomes.json").read_text())
    sample = saved.metrics["test"]["outputs"]  # the first few outputs, kept in the metrics
    assert written["found"]["test"]["predictions"][: len(sample)] == sample


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"rows": [ROWS[0], {"context": "c", "question": "q"}]}, DataError, "row 2 has no reference field 'answers'"),
        ({"rows": [{"context": "c", "question": "q"}]}, DataError, "cannot tell which field holds the references"),
        ({"rows": [{"context": "c", "question": "q", "answers": [""]}]}, DataError, "empty reference"),
        ({"template": "{context} {title} {prompt} answer:"}, DataError, "no field 'title'"),
        ({"data": {"input_fields": ["context", "question"]}}, DataError, "does not place input field(s) ['question']"),
        (
            {"rows": [{"context": "c", "question": "q", "answers": ["word " * 300]}]},
            DataError,
            "over the model's 256 positions",
        ),
        ({"generation": {"metrics": ["f2"]}}, ConfigError, "unknown generation metric 'f2'"),
        ({"reward": {"name": "accuracy"}}, ConfigError, "scores class predictions"),
        ({"verbalizers": [" bad", " good"]}, ConfigError, "verbalizers are for classification"),
        ({"task_model": {"kind": "encoder"}}, ConfigError, "cannot generate text"),
        ({"template": "{context} {question} answer:"}, ConfigError, "'{prompt}' exactly once"),
        (
            {"generation": {"max_new_tokens": 250}},
            DataError,
            "generation.max_new_tokens=250 more, over the model's 256",
        ),
        ({"agent": {"name": "prompt_tuning"}}, ConfigError, "agent 'prompt_tuning' trains through class logits"),
    ],
    ids=[
        "no-reference-field",
        "no-reference-field-at-all",
        "empty-reference",
        "template-names-missing-field",
        "template-misses-input-field",
        "reference-over-context",
        "unknown-metric",
        "classification-reward",
        "verbalizers",
        "encoder",
        "no-prompt",
        "generation-over-context",
        "gradient-agent",
    ],
)
def test_bad_generation_inputs_give_one_clear_error(tiny_clm_dir, tmp_path, change, error, message):
    change = dict(change)
    data_dir = write_qa(tmp_path / "data", change.pop("rows", None))
    template = change.pop("template", "{context} {prompt} answer:")
    with pytest.raises(error) as caught:
        Task.from_config(gen_config(tiny_clm_dir, data_dir, template, **change))
    assert message in str(caught.value)


def test_a_bench_mixing_task_families_is_refused(tmp_path):
    from rlprompt.bench import run_bench

    (tmp_path / "bench.yaml").write_text(
        "base: null\nagents: {random_search: null}\nseeds: [0]\n"
        f"tasks: {{sst2: [], qa: [task=generation, verbalizers=null, 'template={{context}} {{prompt}}', "
        f"task_model.kind=causal_lm]}}\noutput_dir: {tmp_path / 'out'}\n"
    )
    with pytest.raises(ConfigError, match="one task family"):
        run_bench(tmp_path / "bench.yaml")


@pytest.mark.parametrize("reward", ["f1", "likelihood", "bleu"])
def test_generation_rewards_are_refused_for_classification(reward):
    with pytest.raises(ConfigError, match="scores generated text"):
        config_from_dict({"reward": {"name": reward}})


def test_generation_task_refuses_class_scores(qa_task):
    with pytest.raises(RLPromptError, match="no class logits"):
        qa_task.logits(["it was"])
    with pytest.raises(RLPromptError, match="for classification"):
        qa_task.task_model.score_soft_with_grad(torch.zeros(2, 32), ["x"])


# ------------------------------------------------------------------ SmolLM2 (slow tier)


def _squad_config(smollm2_dir: str, **generation):
    from conftest import shared_data_dir

    return config_from_dict(
        {
            "task": "generation",
            "template": "{context}\nQuestion: {question}\n{prompt}\nAnswer:",
            "prompt": "Answer the question with a few words copied from the text.",
            "task_model": {"kind": "causal_lm", "name_or_path": smollm2_dir, "max_sentence_tokens": 384},
            "data": {"dir": str(shared_data_dir("squad", 13)), "input_fields": ["context", "question"]},
            "generation": {"max_new_tokens": 16, "metrics": ["f1", "exact_match"], **generation},
        }
    )


@pytest.mark.slow
def test_smollm2_likelihood_ranks_a_prompt_stating_the_answer_first(smollm2_dir):
    """On the first 8 train questions, a prompt stating each answer vs one that does not:
    measured batch rewards (mean likelihood) -2.114 vs -2.423, stated higher on 5 of 8 (a 135M
    model copies a hint only part of the time)."""
    task = Task.from_config(_squad_config(smollm2_dir))
    model = task.task_model
    stated, unstated = [], []
    for example, refs in list(zip(task.data.train.examples, task.data.train.references, strict=True))[:8]:
        stated.append(float(model.log_likelihood([f"Hint: the answer is {refs[0]}."], [[example]], [[refs]])[0][0]))
        unstated.append(float(model.log_likelihood(["Hint: the answer is in the text."], [[example]], [[refs]])[0][0]))
    assert sum(stated) / 8 > sum(unstated) / 8 + 0.1, (stated, unstated)
    assert sum(a > b for a, b in zip(stated, unstated, strict=True)) >= 5


@pytest.mark.slow
def test_smollm2_generation_equals_model_generate_with_and_without_chat(smollm2_dir):
    task = Task.from_config(_squad_config(smollm2_dir, stop=["\n"]))
    model = task.task_model
    examples = task.data.train.examples[:4]
    prompt = "Answer briefly."
    ours = model.generate([prompt], [examples])[0]
    for example, output in zip(examples, ours, strict=True):
        pre, post = model.input_layout.encode_texts([example])[0]
        ids = torch.tensor([pre + model.input_layout.prompt_ids(prompt) + post])
        out = model.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False, pad_token_id=model.pad_id
        )
        text = model.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0].strip()
        assert output == text
    chat = Task.from_config(_squad_config(smollm2_dir, chat="user")).task_model
    assert "<|im_start|>user" in chat.template and chat.template.endswith("<|im_start|>assistant\n")
    answers = chat.generate([prompt], [examples])[0]
    assert all(answers) and chat.stop_suffix == [chat.tokenizer.eos_token_id]


@pytest.mark.slow
def test_smollm2_reply_opening_with_a_line_break_is_kept_with_stop_after_text(smollm2_dir):
    """SmolLM2 answers 'Summarize:' after a SciTLDR abstract on the next line: with the newline
    stop that output is empty, unless stops count only after text (generation.stop_after_text)."""
    from conftest import shared_data_dir

    def model(after_text: bool):
        return Task.from_config(
            config_from_dict(
                {
                    "task": "generation",
                    "template": "{source}\n{prompt}\nTL;DR:",
                    "prompt": "Summarize:",
                    "task_model": {"kind": "causal_lm", "name_or_path": smollm2_dir, "max_sentence_tokens": 384},
                    "data": {
                        "dir": str(shared_data_dir("scitldr", 13)),
                        "input_fields": ["source"],
                        "reference_field": "targets",
                    },
                    "generation": {"max_new_tokens": 24, "metrics": ["rougeL"], "stop_after_text": after_text},
                }
            )
        )

    task = model(False)
    examples = task.data.train.examples[:4]
    assert task.task_model.generate(["Summarize:"], [examples])[0] == [""] * 4
    kept = model(True).task_model.generate(["Summarize:"], [examples])[0]
    assert all(len(text.split()) >= 3 and "\n" not in text for text in kept)


def test_per_example_outcomes_average_to_the_split_metrics(qa_task):
    """Each example's metric alone, averaged, is the split's metric (f1, exact match and ROUGE-L
    are means over examples; chrF is a corpus metric, kept per example all the same)."""
    metrics = qa_task.evaluate("it was", "test", per_example=True)
    record = metrics["per_example"]
    assert record["n"] == metrics["n"] == len(record["keys"]) == len(set(record["keys"]))
    for name in ("f1", "exact_match", "rougeL"):
        assert sum(record["scores"][name]) / record["n"] == pytest.approx(metrics[name], abs=1e-5)
    assert sum(record["scores"]["likelihood"]) / record["n"] == pytest.approx(metrics["likelihood"], abs=1e-5)
    assert len(record["predictions"]) == record["n"] and all(isinstance(p, str) for p in record["predictions"])
    assert "per_example" not in qa_task.evaluate("it was", "test")
