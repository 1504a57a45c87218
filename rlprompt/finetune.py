"""RL fine-tuning of the LM after prompt search: ``rlprompt finetune``.

The task becomes generation: the LM reads the prompted input (``template`` with the
sentence and the prompt - the config's, or the one a ``best_prompt.json`` holds) and writes
``max_new_tokens`` tokens; the answer maps to a class when it starts with a verbalizer's
words. Each sampled answer earns the task metric of its prediction: 1 when it is the gold
class, 0 when it is another class, ``invalid_reward`` when it is no class.

Methods: ``grpo`` and ``rloo`` through trl (a Python reward callable over the completions),
``ppo`` through :mod:`rlprompt.ppo_finetune`. LoRA (PEFT) is on by default; the base weights
stay untouched. Greedy answers are scored on dev and test before and after training, and
written with the adapter (or the full model) to the run directory:

* ``config.json`` - the resolved config;
* ``finetune_result.json`` - ``before``/``after`` metrics ``{dev, test}`` (the shape of
  ``rlprompt run``'s ``metrics``), the prompt, method, steps and time;
* ``metrics.csv`` and ``tensorboard/`` - per-step mean reward (and the method's losses);
* ``adapter/`` (LoRA; ``PeftModel.from_pretrained(base, adapter/)``) or ``model/`` (full).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rlprompt.config import Config, save_config
from rlprompt.data import TaskData, load_task_data
from rlprompt.errors import ConfigError, RLPromptError, first_line
from rlprompt.experiment import seed_everything
from rlprompt.logger import Logger
from rlprompt.results import FinetuneResult, RunResult
from rlprompt.rewards.classification import prediction_metrics
from rlprompt.rundir import FINETUNE_RESULT, check_finetune_dir, saved_config, writing_run_dir
from rlprompt.template import render
from rlprompt.verbosity import quiet_libraries

EVAL_SPLITS = ("dev", "test")
RESULT = FINETUNE_RESULT


# ---------------------------------------------------------------- the generation task


class AnswerTask:
    """Queries, gold labels and the answer -> class map of one config."""

    def __init__(self, config: Config, tokenizer: Any, prompt: str, data: TaskData) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.data = data
        verbalizers = cast(list[str], config.verbalizers)  # never None once the config is built
        self.verbalizer_words = [v.split() for v in verbalizers]
        max_new = config.finetune.max_new_tokens
        unk = tokenizer.unk_token_id
        for verbalizer in verbalizers:
            ids = tokenizer(verbalizer, add_special_tokens=False)["input_ids"]
            if not ids or (unk is not None and unk in ids):
                raise ConfigError(
                    f"verbalizer {verbalizer!r} is not in the tokenizer's vocabulary "
                    f"(it tokenizes to {tokenizer.convert_ids_to_tokens(ids)})"
                )
            if len(ids) > max_new:
                raise ConfigError(
                    f"verbalizer {verbalizer!r} is {len(ids)} tokens but finetune.max_new_tokens is "
                    f"{max_new}: the LM could never write it"
                )
            if tokenizer.decode(ids, skip_special_tokens=True).split() != verbalizer.split():
                raise ConfigError(
                    f"verbalizer {verbalizer!r} does not survive tokenization (decodes to {tokenizer.decode(ids)!r})"
                )
        if len({tuple(w) for w in self.verbalizer_words}) != len(self.verbalizer_words):
            raise ConfigError(f"verbalizers {config.verbalizers} are not distinct as words")

    def query(self, sentence: str) -> str:
        return render(self.config.model_template, {"sentence": sentence, "prompt": self.prompt})

    def queries(self, split: str) -> list[str]:
        return [self.query(t) for t in self.data.split(split).texts]

    def labels(self, split: str) -> list[int]:
        return list(self.data.split(split).labels)

    def answer_class(self, answer: str) -> int:
        """The class whose verbalizer words start ``answer``; -1 for none."""
        words = answer.split()
        for c, verbal in enumerate(self.verbalizer_words):
            if words[: len(verbal)] == verbal:
                return c
        return -1

    def rewards(self, answers: list[str], gold: list[int]) -> list[float]:
        invalid = self.config.finetune.invalid_reward
        out = []
        for answer, label in zip(answers, gold, strict=True):
            predicted = self.answer_class(answer)
            out.append(invalid if predicted < 0 else float(predicted == label))
        return out


# ---------------------------------------------------------------- model loading


def load_policy(config: Config) -> tuple[Any, Any]:
    """The causal LM (with a fresh LoRA adapter unless ``finetune.lora`` is false) and its
    left-padding tokenizer."""
    from rlprompt.task_models.loading import load_model, load_tokenizer, pick_device

    tm = config.task_model
    if tm.kind != "causal_lm":
        raise ConfigError(f"finetune trains a causal LM: set task_model.kind=causal_lm (got {tm.kind})")
    tokenizer = load_tokenizer(tm.name_or_path, "causal_lm")
    # the task models' loader: clear errors for hub ids offline, missing heads, non-causal checkpoints
    model = load_model(tm.name_or_path, "causal_lm", pick_device(tm.device), torch.float32)
    model.requires_grad_(not config.finetune.lora)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if config.finetune.lora:
        from peft import LoraConfig, get_peft_model

        ft = config.finetune
        lora = LoraConfig(
            r=ft.lora_r,
            lora_alpha=ft.lora_alpha,
            lora_dropout=ft.lora_dropout,
            target_modules=ft.lora_target_modules,
            task_type="CAUSAL_LM",
            init_lora_weights=True,
        )
        try:
            model = get_peft_model(model, lora)
        except ValueError as exc:
            raise ConfigError(
                f"LoRA cannot wrap this model: {first_line(exc)} (set finetune.lora_target_modules)"
            ) from None
    return model, tokenizer


def resolve_prompt(config: Config) -> str:
    """``finetune.prompt_file``'s discrete prompt, or the config's ``prompt``."""
    path = config.finetune.prompt_file
    if path is None:
        return config.manual_prompt
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"finetune.prompt_file not found: {p}")
    try:
        best = RunResult.load(p)
    except RLPromptError as exc:
        raise ConfigError(f"finetune.prompt_file: {exc}") from None
    if best.kind == "soft" or best.prompt is None:
        raise ConfigError(f"finetune.prompt_file {p} holds a soft prompt; fine-tuning needs a discrete one")
    if best.per_input is not None:
        raise ConfigError(
            f"finetune.prompt_file {p} is a per-input policy's run (each input has its own prompt); "
            "fine-tuning needs one prompt for every input"
        )
    if best.label_words is not None and list(best.verbalizers or []) != list(cast(list[str], config.verbalizers)):
        raise ConfigError(
            f"finetune.prompt_file {p} found label words {best.label_words}: fine-tune with the "
            f'verbalizers they make (--set "verbalizers={best.verbalizers}"), which the answers are '
            "read as"
        )
    return best.prompt


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_answers(model: Any, tokenizer: Any, queries: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in range(0, len(queries), batch_size):
        batch = tokenizer(queries[start : start + batch_size], return_tensors="pt", padding=True).to(device)
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers += tokenizer.batch_decode(new, skip_special_tokens=True)
    return answers


def evaluate_greedy(model: Any, task: AnswerTask, splits: tuple[str, ...] = EVAL_SPLITS) -> dict[str, dict[str, Any]]:
    ft = task.config.finetune
    model.eval()
    metrics = {}
    for split in splits:
        answers = greedy_answers(model, task.tokenizer, task.queries(split), ft.max_new_tokens, ft.eval_batch_size)
        predicted = [task.answer_class(a) for a in answers]
        metrics[split] = prediction_metrics(predicted, task.labels(split), task.data.num_classes)
    return metrics


# ---------------------------------------------------------------- trainers


def _train_trl(method: str, model: Any, task: AnswerTask, config: Config, run_dir: Path) -> list[dict[str, Any]]:
    """GRPO or RLOO through trl with the answer reward as a Python callable."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    ft = config.finetune
    train = Dataset.from_dict({"prompt": task.queries("train"), "gold": task.labels("train")})

    def answer_reward(prompts: list[str], completions: list[str], gold: list[int], **_: Any) -> list[float]:
        return task.rewards(list(completions), list(gold))

    common = dict(
        output_dir=str(run_dir / "trainer"),
        max_steps=ft.steps,
        learning_rate=ft.learning_rate,
        per_device_train_batch_size=ft.batch_size * ft.num_generations,
        num_generations=ft.num_generations,
        max_completion_length=ft.max_new_tokens,
        temperature=ft.temperature,
        beta=ft.beta,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        lr_scheduler_type="constant",
        warmup_steps=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    if method == "grpo":
        from trl import GRPOConfig as TrainerConfig
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as TrainerConfig
        from trl import RLOOTrainer as Trainer
    known = set(TrainerConfig.__dataclass_fields__)
    args = TrainerConfig(**{k: v for k, v in common.items() if k in known})
    log: list[dict[str, Any]] = []

    class Record(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            if logs and "reward" in logs:
                log.append(
                    {"iteration": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                )

    trainer = Trainer(
        model=model,
        reward_funcs=answer_reward,
        args=args,
        train_dataset=train,
        processing_class=task.tokenizer,
        callbacks=[Record()],
    )
    trainer.remove_callback(PrinterCallback)  # rlprompt prints its own summary
    trainer.train()
    return log


def _train_ppo(model: Any, task: AnswerTask, config: Config) -> list[dict[str, Any]]:
    from rlprompt.ppo_finetune import PPOFinetuner

    ft = config.finetune
    queries = task.queries("train")
    gold = torch.tensor(task.labels("train"))
    tokenizer = task.tokenizer

    def reward_fn(indices: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
        answers = tokenizer.batch_decode(answer_ids, skip_special_tokens=True)
        return torch.tensor(task.rewards(answers, gold[indices.cpu()].tolist()))

    trainer = PPOFinetuner(
        model,
        tokenizer.pad_token_id,
        reward_fn,
        ft.ppo,
        learning_rate=ft.learning_rate,
        kl_coef=ft.beta,
        temperature=ft.temperature,
        max_new_tokens=ft.max_new_tokens,
    )
    generator = np.random.default_rng(config.seed)
    device = next(model.parameters()).device
    log = []
    for step in range(1, ft.steps + 1):
        chosen = generator.choice(len(queries), size=min(ft.batch_size, len(queries)), replace=False)
        indices = torch.tensor(np.repeat(chosen, ft.num_generations))
        batch = tokenizer([queries[i] for i in indices.tolist()], return_tensors="pt", padding=True).to(device)
        stats = trainer.step(indices, batch["input_ids"], batch["attention_mask"])
        log.append({"iteration": step, **stats})
    return log


# ---------------------------------------------------------------- the command


def run_finetune(config: Config, output_dir: str | os.PathLike[str] | None = None) -> FinetuneResult:
    """Evaluate, fine-tune, evaluate again and save; returns what ``finetune_result.json`` holds."""
    return finetune(config, output_dir)[0]


def finetune(config: Config, output_dir: str | os.PathLike[str] | None = None) -> tuple[FinetuneResult, Any]:
    """:func:`run_finetune` that also returns the trained model (base + adapter in memory)."""
    ft = config.finetune
    if not config.family.has_classes:
        raise ConfigError(
            "rlprompt finetune trains answers to classification tasks (verbalizers as the answers); "
            f"this config has task: {config.task}"
        )
    run_dir = Path(output_dir) if output_dir is not None else Path("runs") / f"finetune-{ft.method}-seed{config.seed}"
    check_finetune_dir(run_dir)  # before anything is created: a refused directory stays as it was
    prompt = resolve_prompt(config)
    data = load_task_data(config.data, num_classes=len(cast(list[str], config.verbalizers)))
    # locked while it writes; a failed start removes what it wrote (the same command can run again)
    # the libraries' advisory warnings and bars stay hidden (rlprompt -v shows them)
    with writing_run_dir(run_dir, "finetune"), quiet_libraries(import_transformers=True):
        return _finetune_locked(config, run_dir, prompt, data)


def _finetune_locked(config: Config, run_dir: Path, prompt: str, data: TaskData) -> tuple[FinetuneResult, Any]:
    ft = config.finetune
    seed_everything(config.seed)
    model, tokenizer = load_policy(config)
    task = AnswerTask(config, tokenizer, prompt, data)
    save_config(config, run_dir / "config.json")
    started = time.perf_counter()
    before = evaluate_greedy(model, task)
    if ft.method == "ppo":
        log = _train_ppo(model, task, config)
    else:
        log = _train_trl(ft.method, model, task, config, run_dir)
    after = evaluate_greedy(model, task)
    saved = save_trained(model, tokenizer, run_dir, lora=ft.lora)
    result = FinetuneResult(
        run_dir=str(run_dir),
        method=ft.method,
        lora=ft.lora,
        prompt=prompt,
        task_model=config.task_model.label,
        before={"metrics": before},
        after={"metrics": after},
        steps=ft.steps,
        answers_sampled=ft.steps * ft.batch_size * ft.num_generations,
        saved=saved,
        seed=config.seed,
        wall_time_s=round(time.perf_counter() - started, 2),
    )
    logger = Logger(run_dir, tensorboard=True, keep_iterations=0)  # metrics.csv + TensorBoard
    for row in log:
        logger.record(row, step=int(row["iteration"]))
    logger.close()
    result.save(run_dir / RESULT)
    return result, model


def save_trained(model: Any, tokenizer: Any, run_dir: Path, lora: bool) -> str:
    """The adapter (LoRA) or the full model, in Hugging Face format, with the tokenizer."""
    import shutil

    name = "adapter" if lora else "model"
    tmp = run_dir / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(run_dir / name, ignore_errors=True)
    os.replace(tmp, run_dir / name)
    return name


def load_finetuned(run_dir: str | os.PathLike[str]) -> tuple[Any, Any, Config]:
    """Reload a fine-tuned run's model (base + adapter, or the full model) and its config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlprompt.task_models.loading import load_model

    run_dir = Path(run_dir)
    if not (run_dir / RESULT).is_file():
        raise RLPromptError(f"{run_dir} holds no finished fine-tuning run (no {RESULT})")
    config = saved_config(run_dir)
    result = FinetuneResult.load(run_dir / RESULT)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / result.saved)
    tokenizer.padding_side = "left"
    if result.saved == "adapter":
        from peft import PeftModel

        base = load_model(config.task_model.name_or_path, "causal_lm", torch.device("cpu"), torch.float32)
        model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    else:
        model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    return model.eval(), tokenizer, config
