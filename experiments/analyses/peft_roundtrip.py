"""Soft prompt -> PEFT adapter -> ``PeftModel.from_pretrained`` -> the same predictions.

Exports a finished soft-prompt run with ``rlprompt export --format peft``, loads the adapter
on the base model with PEFT alone (no rlprompt scoring code), recomputes the encoder's class
scores on the test split and compares them with rlprompt's.

    rlprompt run experiments/configs/demo.yaml --set agent.name=cma_es --set env.kind=soft \
        --set budget.prompt_evals=480 --output-dir runs/demo-soft
    python experiments/analyses/peft_roundtrip.py runs/demo-soft
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--adapter", default=None, help="where to export (default: <run_dir>/peft-adapter)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from rlprompt.export import export_run
    from rlprompt.rundir import load_run, run_prompt
    from rlprompt.task import Task
    from rlprompt.task_models import mean_pool
    from rlprompt.task_models.loading import resolve_name_or_path

    adapter = Path(args.adapter or Path(args.run_dir) / "peft-adapter")
    export_run(args.run_dir, "peft", adapter)
    config, best = load_run(args.run_dir)
    soft = run_prompt(args.run_dir, best)
    if config.task_model.kind != "encoder" or "{prompt}" in "".join(config.verbalizers):
        print("this check recomputes encoder scores with fixed verbalizers only", file=sys.stderr)
        return 2
    path = resolve_name_or_path(config.task_model.name_or_path, config.task_model.kind)
    tokenizer = AutoTokenizer.from_pretrained(path)
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(path), str(adapter)).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = peft_model(**batch).last_hidden_state
        prefix = torch.ones(len(texts), soft.shape[0], dtype=batch["attention_mask"].dtype)
        return mean_pool(hidden, torch.cat([prefix, batch["attention_mask"]], dim=1))

    task = Task.from_config(config)
    texts = task.data.test.texts
    peft_logits = config.task_model.scale * embed(texts) @ embed(list(config.verbalizers)).T
    ours = task.task_model.score([soft], task.data.test.texts)[0]  # raw scores, as PEFT's
    labels = task.labels("test")
    agree = (peft_logits.argmax(-1) == ours.argmax(-1)).float().mean().item()
    print(f"adapter            : {adapter} ({', '.join(sorted(p.name for p in adapter.iterdir()))})")
    print(f"test examples      : {len(texts)}")
    print(f"prediction agreement PEFT vs rlprompt: {agree:.4f}")
    print(f"max |logit diff|   : {(peft_logits - ours).abs().max().item():.2e}")
    print(
        f"test accuracy      : PEFT {(peft_logits.argmax(-1) == labels).float().mean().item():.4f}, "
        f"rlprompt {(ours.argmax(-1) == labels).float().mean().item():.4f}, "
        f"best_prompt.json {best.metrics['test']['accuracy']:.4f}"
    )
    return 0 if agree == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
