"""Per-input demonstrations by retrieval: the nearest pool examples, never the input itself,
class balance, per-input evaluation (classification and generation), the saved retriever, and
bad input."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlprompt.cli import main
from rlprompt.config import DemosConfig
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.experiment import run_experiment
from rlprompt.retrieval import DemoRetriever, query_text
from rlprompt.task import Task, evaluate_prompt
from rlprompt.template import DemoPool
from rlprompt.testing.toy import DemoOverlapTaskModel, make_toy_demo_task

sys.path.insert(0, str(Path(__file__).parent))
from test_demos import demo_config  # noqa: E402
from test_generation import gen_config, write_qa  # noqa: E402


class TableEncoder:
    """A sentence encoder with known embeddings: ``table[text]`` (unit length)."""

    name_or_path = "table"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = {k: v / np.linalg.norm(v) for k, v in table.items()}
        self.calls = 0

    def encode(self, texts):
        self.calls += len(texts)
        return torch.tensor(np.stack([self.table[t] for t in texts]), dtype=torch.float32)


def class_encoder(task: Task, noise: float = 0.3, seed: int = 0) -> TableEncoder:
    """Embeddings that carry each toy text's class (plus noise): its nearest neighbours share it."""
    rng = np.random.default_rng(seed)
    table = {}
    for split in ("train", "dev", "test"):
        data = task.data.split(split)
        for text, label in zip(data.texts, data.labels, strict=True):
            table[text] = np.eye(task.num_classes)[label] * 2 + noise * rng.normal(size=task.num_classes)
    return TableEncoder(table)


class SameClassModel(DemoOverlapTaskModel):
    """An example is answered well when its block's demonstrations share its class: quality is
    the fraction that do. No fixed block serves both classes; per-input blocks can."""

    def score_pairs(self, prompts, texts_per_prompt):
        self._count(sum(len(t) for t in texts_per_prompt))
        out = []
        for prompt, texts in zip(prompts, texts_per_prompt, strict=True):
            ids = self.pool.parse(prompt) if prompt else []
            rows = []
            for text in texts:
                same = [self.pool.labels[i] == self.labels_of_text[text] for i in ids]
                rows.append(self._logits(torch.tensor(float(np.mean(same)) if same else 0.0), [text]))
            out.append(torch.cat(rows).float())
        return out

    def score(self, prompts, texts):
        return torch.stack(self.score_pairs(prompts, [list(texts)] * len(prompts)))


def same_class_task(k: int = 2) -> Task:
    task = make_toy_demo_task(k=k)
    pool = task.demo_pool()
    task.task_model = SameClassModel(pool, task.task_model.target_ids, task.task_model.labels_of_text)
    return task


# ------------------------------------------------------------------ retrieval


def test_sentence_encoder_puts_paraphrases_closer():
    from rlprompt.task_models.embedding import SentenceEncoder

    encoder = SentenceEncoder("embedded:minilm")
    e = encoder.encode(["a wonderful, moving film", "a great movie, deeply touching", "the stock market fell sharply"])
    assert e.shape == (3, encoder.dim) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2
    assert encoder.texts_encoded == 3 and encoder.encode([]).shape == (0, encoder.dim)


def test_retrieval_never_returns_the_query_itself():
    task = make_toy_demo_task(k=3)
    pool = task.demo_pool()
    # identical texts get identical embeddings: each train query's own pool entry is its top match
    encoder = class_encoder(task)
    retriever = DemoRetriever.build(pool, encoder, k=3)
    train = list(task.data.train.texts)
    for i, ids in enumerate(retriever.select(train)):
        assert i not in ids and len(ids) == len(set(ids)) == 3
    # a pool that holds a longer text containing the query is not shown to it either
    texts = ["good", "very good indeed", "bad", "awful stuff", "fine", "so-so"]
    pool2 = DemoPool(
        "{sentence} => {label_word}\n", texts, ["pos", "pos", "neg", "neg", "pos", "neg"], [1, 1, 0, 0, 1, 0]
    )
    table = TableEncoder({t: np.array([1.0, 0.1 * i]) for i, t in enumerate(texts)})
    ids = DemoRetriever.build(pool2, table, k=2).select(["good"])[0]
    assert 0 not in ids and 1 not in ids


def test_an_input_is_never_shown_itself_whatever_the_template_shows_or_the_pieces_make():
    # the demonstration shows the question only: the input's own pool entry is still out of reach
    rows = [{"context": f"Passage {i} about topic {i % 3}.", "question": f"What is item {i}?"} for i in range(6)]
    pool = DemoPool("Q: {question} A: {answer}\n", rows, [f"a{i}" for i in range(6)], [None] * 6)
    table = TableEncoder({query_text(r): np.array([1.0, 0.01 * i]) for i, r in enumerate(rows)})
    for i, ids in enumerate(DemoRetriever.build(pool, table, k=2).select(rows)):
        assert i not in ids
    # two demonstrations that together show a two-field input: the second is skipped
    pool = DemoPool(
        "{context} | {question} => {answer}\n",
        [
            {"context": "Alpha.", "question": "Other?"},
            {"context": "Beta.", "question": "Which?"},
            {"context": "Gamma.", "question": "Else?"},
        ],
        ["x", "y", "z"],
        [None] * 3,
    )
    query = {"context": "Alpha.", "question": "Which?"}
    table = TableEncoder(
        {
            query_text(x): np.array(v)
            for x, v in zip([*pool.examples, query], [[1.0, 0.0], [0.9, 0.1], [0.1, 1.0], [1.0, 0.05]], strict=True)
        }
    )
    (ids,) = DemoRetriever.build(pool, table, k=2, order="similar_first").select([query])
    assert ids == [0, 2]
    # an empty text is matched by its fields too
    pool = DemoPool("{sentence} => {label_word}\n", ["", "fine", "bad"], ["pos", "pos", "neg"], [1, 1, 0])
    table = TableEncoder({"": np.array([1.0, 0.0]), "fine": np.array([0.5, 0.5]), "bad": np.array([0.0, 1.0])})
    assert 0 not in DemoRetriever.build(pool, table, k=2).select([""])[0]


def test_retrieval_takes_the_nearest_in_the_configured_order():
    task = make_toy_demo_task(k=3)
    pool = task.demo_pool()
    rng = np.random.default_rng(1)
    table = {t: rng.normal(size=8) for t in [*task.data.train.texts, *task.data.test.texts]}
    encoder = TableEncoder(table)
    queries = list(task.data.test.texts[:5])
    last = DemoRetriever.build(pool, encoder, k=4).select(queries)
    first = DemoRetriever.build(pool, encoder, k=4, order="similar_first").select(queries)
    keys = np.stack([encoder.table[t] for t in pool.examples])
    for query, ids_last, ids_first in zip(queries, last, first, strict=True):
        similarity = keys @ encoder.table[query]
        expected = list(np.argsort(-similarity)[:4])
        assert ids_first == expected and ids_last == expected[::-1]
    # balanced: k / C of each class, the most similar of each
    balanced = DemoRetriever.build(pool, encoder, k=4, balanced=True, order="similar_first").select(queries)
    labels = np.asarray(pool.labels)
    for query, ids in zip(queries, balanced, strict=True):
        assert sorted(labels[ids].tolist()) == [0, 0, 1, 1]
        similarity = keys @ encoder.table[query]
        for c in (0, 1):
            of_class = [i for i in np.argsort(-similarity) if labels[i] == c][:2]
            assert sorted(i for i in ids if labels[i] == c) == sorted(of_class)
        assert list(similarity[ids]) == sorted(similarity[ids], reverse=True)


def test_per_input_demonstrations_beat_every_fixed_block_where_the_right_one_depends_on_the_input():
    task = same_class_task(k=2)
    task._retriever = DemoRetriever.build(
        task.demo_pool(), class_encoder(task), k=2, template=task.config.model_template
    )
    prompts = task.retrieved_prompts("test")
    retrieved = task.evaluate_per_input(prompts, "test", per_example=True)
    assert retrieved["n"] == len(task.data.test) and retrieved["lm_calls"] == len(task.data.test)
    assert len(retrieved["per_example"]["scores"]["accuracy"]) == len(task.data.test)
    pool = task.demo_pool()
    best_fixed = max(
        task.evaluate(pool.render([a, b]), "test")["accuracy"]
        for a in range(len(pool))
        for b in range(len(pool))
        if a != b
    )
    assert retrieved["accuracy"] >= 0.9 and retrieved["accuracy"] > best_fixed + 0.2
    # with batch calibration the class shift is the mean over the split's per-input scores
    from rlprompt.rewards import batch_calibrate, class_log_probs

    calibrated = dataclasses.replace(task, config=dataclasses.replace(task.config, calibration="batch"))
    metrics = calibrated.evaluate_per_input(prompts, "test")
    raw = torch.cat(task.task_model.score_pairs(prompts, [[t] for t in task.data.test.texts]))
    expected = (batch_calibrate(raw).argmax(-1) == torch.tensor(task.data.test.labels)).float().mean()
    assert metrics["accuracy"] == pytest.approx(float(expected))
    assert metrics["class_shift"] == pytest.approx(class_log_probs(raw).mean(0).tolist())
    # the same evaluation through the config route
    config = dataclasses.replace(task.config, demos=dataclasses.replace(task.config.demos, select="nearest", k=2))
    task.config = config
    metrics = evaluate_prompt(config, None, "test", task=task)
    assert metrics["accuracy"] == retrieved["accuracy"] and metrics["prompt"].startswith("<per input: the 2 nearest")


def test_generation_examples_get_their_own_demonstrations(tiny_clm_dir, tmp_path):
    qa = write_qa(tmp_path / "qa")
    config = gen_config(
        tiny_clm_dir,
        qa,
        "{demos}{context} {question} {prompt}",
        demos={"template": "{context} {question} answer: {answer}\n\n", "select": "nearest", "k": 2},
        env={"kind": "demos", "k": 2},
    )
    task = Task.from_config(config)
    data = task.data.test
    rng = np.random.default_rng(0)
    table = {query_text(x): rng.normal(size=4) for x in [*task.data.train.examples, *data.examples]}
    task._retriever = DemoRetriever.build(task.demo_pool(), TableEncoder(table), k=2)
    prompts = task.retrieved_prompts("test")
    assert len(set(prompts)) > 1
    per_input = task.evaluate_per_input(prompts, "test", per_example=True)
    assert per_input["n"] == len(data)
    # each example's metrics are what its own prompt alone gives
    for i in (0, len(data) - 1):
        alone = task._metrics_of([prompts[i]], [[data.examples[i]]], [[data.references[i]]], per_example=True)
        assert per_input["per_example"]["predictions"][i] == alone["per_example"]["predictions"][0]
        assert per_input["per_example"]["scores"]["f1"][i] == pytest.approx(alone["per_example"]["scores"]["f1"][0])


def test_a_saved_retriever_gives_the_same_prompts_for_new_inputs(tmp_path):
    task = make_toy_demo_task(k=3)
    encoder = class_encoder(task)
    retriever = DemoRetriever.build(task.demo_pool(), encoder, k=4, balanced=True, template=task.config.model_template)
    path = retriever.save(tmp_path / "retriever.json")
    loaded = DemoRetriever.load(path, encoder=encoder)
    queries = list(task.data.test.texts[:6])
    assert loaded.blocks(queries) == retriever.blocks(queries)
    assert torch.equal(loaded.embeddings, retriever.embeddings)
    text = loaded.text(queries[0])
    assert text == f"{loaded.prompt(queries[0])}{queries[0]} =>" and task.demo_pool().parse(loaded.prompt(queries[0]))
    # a damaged file is one clear error
    data = json.loads(path.read_text())
    data["embeddings"]["base64"] = data["embeddings"]["base64"][::-1]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="damaged|sha256"):
        DemoRetriever.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a retriever"):
        DemoRetriever.load(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="never replaces"):  # saving over another file is refused
        retriever.save(tmp_path / "other.json")
    assert (tmp_path / "other.json").read_text() == "{}"
    retriever.save(path)  # an earlier retriever may be replaced


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "change, message",
    [
        ({"select": "knn"}, "demos.select must be"),
        ({"order": "random"}, "demos.order must be"),
        ({"k": 0}, "demos.k must be"),
    ],
)
def test_bad_retrieval_settings_are_one_clear_error(change, message):
    with pytest.raises(ConfigError, match=message):
        DemosConfig(template="{sentence} {label_word}", **change)


def test_retrieval_misuse_is_one_clear_error(tiny_clm_dir, small_data, tmp_path):
    task = make_toy_demo_task(k=3)
    pool = task.demo_pool()
    encoder = class_encoder(task)
    with pytest.raises(ConfigError, match="multiple of the 2 classes"):
        DemoRetriever.build(pool, encoder, k=3, balanced=True)
    with pytest.raises(ConfigError, match="pool of more than"):
        DemoRetriever.build(pool, encoder, k=len(pool))
    with pytest.raises(ConfigError, match="one prompt per test example"):
        task.evaluate_per_input(["", ""], "test")
    with pytest.raises(ConfigError, match="one prompt per test example"):
        task.evaluate_per_input(None, "test")
    with pytest.raises(RLPromptError, match="shows that example"):
        train = task.data.train
        task.evaluate_per_input([pool.render([i]) for i in range(len(train))], "train")
    config = demo_config(
        tiny_clm_dir,
        small_data,
        demos={"template": "Review: {sentence}\nSentiment: {label_word}\n\n", "select": "nearest"},
    )
    with pytest.raises(ConfigError, match="nothing is searched"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="one fixed block"):
        evaluate_prompt(config, "Review: x\nSentiment: positive\n\n")
    for change, message in (
        ({"template": "Review: {sentence}\n{prompt}"}, "put '\\{demos\\}' in the template"),
        ({"demos": {**dataclasses.asdict(config.demos), "balanced": True, "k": 3}}, "multiple of the 2"),
    ):
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(config, **{k: (DemosConfig(**v) if k == "demos" else v) for k, v in change.items()})
    # the CLI never replaces a file that is not a retriever it wrote
    cfg = tmp_path / "c.yaml"
    cfg.write_text('template: "{sentence} {prompt}"\n')
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    assert main(["eval", "--config", str(cfg), "--save-retriever", str(mine)]) == 2
    assert mine.read_text() == '{"mine": 1}'
    same = str(tmp_path / "both.json")
    assert main(["eval", "--config", str(cfg), "--save-retriever", same, "--save-outcomes", same]) == 2


def test_eval_scores_retrieval_per_input_and_saves_a_retriever_that_reproduces_it(
    tiny_clm_dir, small_data, tmp_path, capsys
):
    """The CLI route with the real MiniLM: per-input scores equal Task.evaluate_per_input's, the
    outcome file holds every test example, and the saved retriever gives each input's block."""
    from rlprompt.config import save_config
    from rlprompt.outcomes import read_outcomes

    config = demo_config(
        tiny_clm_dir,
        small_data,
        demos={"template": "Review: {sentence}\nSentiment: {label_word}\n\n", "select": "nearest", "k": 2},
    )
    path = tmp_path / "retrieval.json"
    save_config(config, path)
    assert (
        main(
            [
                "eval",
                "--config",
                str(path),
                "--no-progress",
                "--save-outcomes",
                str(tmp_path / "o.json"),
                "--save-retriever",
                str(tmp_path / "r.json"),
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    task = Task.from_config(config)
    blocks = task.retrieved_prompts("test")
    direct = task.evaluate_per_input(blocks, "test")
    assert printed["accuracy"] == direct["accuracy"] and printed["n"] == direct["n"] == len(task.data.test)
    assert printed["lm_calls"] == len(blocks) and len(set(blocks)) > 1
    outcomes = read_outcomes(tmp_path / "o.json")["outcomes"]
    assert outcomes["n"] == len(task.data.test)
    retriever = DemoRetriever.load(tmp_path / "r.json")
    assert [retriever.prompt(x) for x in task.data.test.texts[:5]] == blocks[:5]
    assert retriever.text(task.data.test.texts[0]) == f"{blocks[0]}Review: {task.data.test.texts[0]}\nSentiment:"
    # the same settings with a fixed prompt, or the retriever of a fixed-prompt config, are refused
    assert main(["eval", "--config", str(path), "--prompt", "Sentiment:", "--no-progress"]) == 2
    assert "one fixed block" in capsys.readouterr().err
