"""The structure ARCHITECTURE.md describes: layers point one way, configs and the CLI's start
import no torch, fixtures stay out of product code, and every registry rejects duplicates."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

LAYERS = [
    # 0: configs, data, results and the machinery everything uses
    [
        "rlprompt.errors",
        "rlprompt.io",
        "rlprompt.registry",
        "rlprompt.budget",
        "rlprompt.checkpoint",
        "rlprompt.config",
        "rlprompt.data",
        "rlprompt.results",
        "rlprompt.logger",
        "rlprompt.progress",
        "rlprompt.verbosity",
        "rlprompt.stats",
        "rlprompt.outcomes",
        "rlprompt.aggregate",
        "rlprompt.template",
        "rlprompt.families",
    ],
    # 1: models and rewards
    ["rlprompt.task_models", "rlprompt.rewards", "rlprompt.rl"],
    # 2: the task (data + model + reward) and what records its scores
    ["rlprompt.task", "rlprompt.generation_task", "rlprompt.tracker", "rlprompt.retrieval"],
    # 3: environments
    ["rlprompt.envs"],
    # 4: agents and their training loop's callbacks
    ["rlprompt.agents", "rlprompt.callbacks"],
    # 5: experiments, reports and the command line
    [
        "rlprompt.rundir",
        "rlprompt.reporting",
        "rlprompt.experiment",
        "rlprompt.bench",
        "rlprompt.scaleout",
        "rlprompt.export",
        "rlprompt.compare",
        "rlprompt.ppo_finetune",
        "rlprompt.finetune",
        "rlprompt.cli",
        "rlprompt.config_reference",
    ],
]
PACKAGE_DIRS = {"rlprompt": ROOT / "rlprompt", "rlprompt.envs": ROOT / "envs", "rlprompt.agents": ROOT / "agents"}


def layer_of(module: str) -> int | None:
    best = None
    for index, names in enumerate(LAYERS):
        for name in names:
            matches = module == name or module.startswith(name + ".")
            if matches and (best is None or len(name) > best[1]):
                best = (index, len(name))
    return None if best is None else best[0]


def product_modules() -> dict[str, Path]:
    modules = {}
    for package, directory in PACKAGE_DIRS.items():
        for path in directory.rglob("*.py"):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if not name.startswith("rlprompt.testing"):
                modules[name] = path
    return modules


def runtime_imports(path: Path) -> list[str]:
    """rlprompt modules imported at run time (imports under ``if TYPE_CHECKING:`` are skipped)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for n in ast.walk(child)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("rlprompt")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlprompt"):
            found.append(node.module)
    return found


def test_layers_point_one_way():
    violations = []
    for module, path in sorted(product_modules().items()):
        own = len(LAYERS) - 1 if module == "rlprompt" else layer_of(module)  # the package's lazy re-exports
        assert own is not None, f"{module} is in no layer of ARCHITECTURE.md"
        for target in runtime_imports(path):
            if target.startswith("rlprompt.testing"):
                violations.append(f"{module} imports the fixture {target}")
                continue
            other = layer_of(target)
            if other is not None and other > own:
                violations.append(f"{module} (layer {own}) imports {target} (layer {other})")
    assert violations == []


def import_graph() -> dict[str, set[str]]:
    """Product module -> the product modules it imports at run time (a package counts as its ``__init__``)."""
    modules = product_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for target in runtime_imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target not in (module, "rlprompt"):  # the root package only re-exports lazily
                targets.add(target)
        graph[module] = targets
    return graph


def test_no_import_cycles():
    """No two modules import each other, directly or through others (lazy imports included: a cycle
    broken only by a function-level import is still one). Registries import providers by name."""
    graph = import_graph()
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_configs_and_a_config_error_import_no_torch():
    code = (
        "import sys\n"
        "import rlprompt, rlprompt.agents, rlprompt.envs, rlprompt.task_models, rlprompt.rewards\n"
        "from rlprompt.config import Config, config_to_dict, load_config\n"
        "config = load_config('experiments/configs/demo-minilm.yaml', ['agent.name=sql', 'env.kind=token'])\n"
        "assert config_to_dict(config)['agent']['name'] == 'sql'\n"
        "from rlprompt.cli import main\n"
        "assert main(['run', 'experiments/configs/demo-minilm.yaml', '--set', 'agent.learning_rat=1']) == 2\n"
        "assert main(['eval', '--config', 'experiments/configs/demo-minilm.yaml', '--set', 'env.kind=nope']) == 2\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_config_json_holds_only_the_fields_of_the_kinds_used():
    from rlprompt.config import config_from_dict, config_to_dict

    data = config_to_dict(config_from_dict({"env": {"kind": "soft"}, "agent": {"name": "cma_es"}}))
    assert data["env"]["kind"] == "soft" and "n_tokens" in data["env"] and "prompt_length" not in data["env"]
    assert data["agent"]["name"] == "cma_es" and "sigma0" in data["agent"] and "clip_range" not in data["agent"]
    assert config_from_dict(data) == config_from_dict(data)


def test_registries_reject_duplicates_and_name_the_unknown():
    from rlprompt.errors import ConfigError
    from rlprompt.registry import AGENTS, ENVS, METRICS, REWARDS, TASK_MODELS

    for registry in (AGENTS, ENVS, METRICS, REWARDS, TASK_MODELS):
        name = registry.names()[0]
        with pytest.raises(ValueError, match="already registered"):
            registry.register(name, object())
        with pytest.raises(ConfigError, match=f"unknown {registry.what} 'no-such-thing'"):
            registry["no-such-thing"]


def test_a_reward_by_dotted_path(tmp_path):
    from rlprompt.config import config_from_dict
    from rlprompt.rewards import compute_reward

    config = config_from_dict({"reward": {"name": "rlprompt.rewards.classification:accuracy"}})
    import torch

    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    value = compute_reward(config.reward.name, logits, torch.tensor([0, 0]))
    assert value.tolist() == [0.5]


def test_every_folder_of_the_product_is_a_listed_package():
    """A folder of the product (code or data: the demo dataset, the candidate sets) that is not in
    pyproject's ``packages`` is left out of a wheel, or shipped only with a setuptools warning."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = set()
    for package, directory in PACKAGE_DIRS.items():
        for path in directory.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                parts = path.parent.relative_to(directory).parts
                folders.add(".".join([package, *parts]))
    assert folders - listed == set(), f"folders missing from pyproject's packages: {sorted(folders - listed)}"
    for package in setuptools["package-data"]:
        assert package in listed, package
