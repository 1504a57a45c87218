"""The task-family contract: every family registered in ``TASKS`` is checked here on a tiny
fixture, so adding a family means one module, one registration and one fixture below.

A family builds its task class from a config, reports the metrics it names, gives a bench row
and export fields that a table and a JSON file can hold, says whether it has classes as its task
does, and runs end to end through ``rlprompt run``. No product module outside
``rlprompt/families`` branches on a family's name."""

from __future__ import annotations

import ast
import json
import math

import pytest

from rlprompt.config import config_from_dict, config_to_dict
from rlprompt.errors import ConfigError
from rlprompt.families.base import TaskFamily
from rlprompt.registry import TASKS
from rlprompt.task import Task


def classification_config(request):
    from rlprompt.testing.toy_lm import toy_lm_config

    return toy_lm_config(["agent.name=random_search", "env.kind=edit", "env.batch_size=4"])


def generation_config(request):
    from test_generation import gen_config, write_qa

    directory = request.getfixturevalue("tmp_path_factory").mktemp("family-qa")
    config = gen_config(
        request.getfixturevalue("tiny_clm_dir"),
        write_qa(directory),
        agent={"name": "random_search"},
        env={"kind": "edit", "batch_size": 4},
    )
    return config


FIXTURES = {"classification": classification_config, "generation": generation_config}
"""A tiny config of each registered family (a new family adds its own)."""


@pytest.fixture(scope="module", params=TASKS.names())
def family_case(request):
    name = request.param
    assert name in FIXTURES, f"task family '{name}' has no fixture in tests/test_task_family_contract.py"
    config = FIXTURES[name](request)
    return name, config, Task.from_config(config)


def test_every_registered_family_is_a_task_family_with_a_task_class():
    assert TASKS.names() == sorted(FIXTURES)
    for name in TASKS.names():
        family = TASKS[name]
        assert isinstance(family, TaskFamily) and family.name == name
        assert issubclass(family.task_class, Task)
        assert family.answer_field in ("label_word", "answer")


def test_an_unknown_family_is_one_error_naming_the_key():
    with pytest.raises(
        ConfigError,
        match="config key 'task': unknown task family 'clasification' \\(did you mean 'classification'\\?\\)",
    ):
        config_from_dict({"task": "clasification"})


def test_the_family_builds_its_task_class_and_reports_its_metrics(family_case):
    name, config, task = family_case
    family = TASKS[name]
    assert type(task) is family.task_class
    assert task.metric_names == family.metric_names(config)
    assert task.primary_metric == family.metric_names(config)[0]
    assert family.has_classes == (task.num_classes > 0)
    assert config_from_dict(config_to_dict(config)) == config  # the checks' defaults survive a round trip


def test_a_family_task_class_refuses_another_familys_config(family_case):
    """``Task.from_config`` builds whatever family a config names; a family's own subclass refuses the others."""
    name, config, _ = family_case
    for other in TASKS.names():
        task_class = TASKS[other].task_class
        if other != name and task_class is not Task:
            with pytest.raises(ConfigError, match=f"got task: {name}"):
                task_class.from_config(config)


def test_bench_row_and_export_fields_hold_finite_numbers_and_json(family_case):
    name, config, task = family_case
    family = TASKS[name]
    metrics = {split: task.evaluate(config.manual_prompt, split) for split in ("train", "dev", "test")}
    names = family.metric_names(config)
    for split in metrics.values():
        assert all(isinstance(split[n], float) and math.isfinite(split[n]) for n in names)
    row = family.result_row(metrics, metrics, names)
    assert row and all(isinstance(v, float) and math.isfinite(v) for v in row.values())
    assert row[f"test_{names[0]}"] == metrics["test"][names[0]]
    fields = family.export_fields(config)
    assert json.loads(json.dumps(fields)) == fields and fields


def test_a_run_records_the_family_and_its_metrics(family_case, tmp_path):
    from rlprompt.experiment import run_experiment

    name, config, task = family_case
    config.budget.prompt_evals = 8
    result = run_experiment(config, tmp_path / "run", progress=False, task=task)
    assert result.task == name and result.metric_names == TASKS[name].metric_names(config)
    assert result.primary_metric in result.metrics["test"]


def test_no_product_module_outside_the_families_branches_on_a_family_name():
    """No ``x.task == "generation"`` (or ``in (...)``) outside ``rlprompt/families``: a family's
    differences are its entry's methods and capabilities (``has_classes``, ``answer_field``)."""
    from test_structure import product_modules

    names = set(TASKS.names())
    violations = []
    for module, path in sorted(product_modules().items()):
        if module.startswith("rlprompt.families"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                constants = [o.value for o in operands if isinstance(o, ast.Constant)]
                constants += [
                    e.value
                    for o in operands
                    if isinstance(o, ast.Tuple | ast.List | ast.Set)
                    for e in o.elts
                    if isinstance(e, ast.Constant)
                ]
                reads_task = any(
                    isinstance(n, ast.Attribute) and n.attr == "task" for o in operands for n in ast.walk(o)
                )
                if reads_task and names & {c for c in constants if isinstance(c, str)}:
                    violations.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert violations == []


def test_a_users_subclass_of_a_family_task_class_is_built_as_itself():
    from rlprompt.testing.toy_lm import toy_lm_config

    class MyTask(Task):
        pass

    config = toy_lm_config()
    assert type(MyTask.from_config(config)) is MyTask
    generation_class = TASKS["generation"].task_class
    with pytest.raises(ConfigError, match="GenerationTask needs task: generation, got task: classification"):
        generation_class.from_config(config)
