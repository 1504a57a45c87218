"""Where a classification scoring call spends its time: the transformer body against the LM head.

Gemma 3 270M's vocabulary has 262,144 tokens, so its LM head (262144 x 640, tied to the input
embeddings: 168 M of its 268 M parameters) is larger than its transformer body. The causal task
model reads each row's class scores from the next-token log-probabilities of the verbalizers
(" negative" / " positive") at one position per row: the head runs on that one hidden state per
row, never on the whole sequence, but it still produces every vocabulary logit, because the
scores are log-probabilities normalised over the whole vocabulary (log-softmax).

For SmolLM2-135M-Instruct (``embedded:smollm2``, 49,152 tokens) and Gemma 3 270M
(``embedded:gemma3-270m``), on SST-2 with ``sst2-smollm2.yaml``'s template
(``"Review: {sentence}\n{prompt}"``), score cache off, two kinds of call:

* training: ``--prompts`` prompts x ``--examples`` train reviews (8 x 8 = 64 rows, one batch) in the
  steady state of training: the reviews' key/value caches were computed by an earlier call, so
  only each prompt's few tokens run on top of them (the prefix-cached path);
* eval: one prompt ('Sentiment:') on ``--eval-examples`` test reviews, each read once: the full
  forward of every review (what ``rlprompt eval`` of one prompt does).

Per call (median of ``--repeats``):

* call: seconds of ``TaskModel.score``;
* head: the head stage of that call, replayed on the hidden states the call fed the head
  (recorded): the matmul to all vocabulary logits, then the log-softmax and the verbalizer
  columns; and each part alone (the matmul; the log-softmax on its logits). The replays are
  interleaved with the alternatives below, 2 x ``--repeats`` times each, medians;
* body: call - head (the transformer forwards, batching, bookkeeping);
* alternatives on the same hidden states, with their largest difference from the current
  scores: the log-sum-exp instead of the materialised log-softmax (the same scores), and the
  verbalizer rows of the head alone (no normalisation: 2 rows instead of the vocabulary, other
  scores; a lower bound only).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/benchmarks/bench_lm_head.py --json-out experiments/results/lm_head_cpu.json

(its output, after that command line, is ``experiments/results/lm_head_cpu.txt``; 85 s on one
CPU thread once both models are converted, 20 s of it loading them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from rlprompt.config import config_from_dict
from rlprompt.data import load_file
from rlprompt.task import Task

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [
    "Sentiment:",
    "The sentiment is",
    "Overall, it was",
    "My verdict:",
    "In short, the film is",
    "The review is",
    "Rating:",
    "This review sounds",
    "Answer:",
    "Label:",
    "Tone:",
    "Feeling:",
    "Opinion:",
    "So the movie was",
    "The critic thinks it is",
    "Class:",
]
WARMUP = ["It was", "Verdict:"]
MODELS = {"smollm2": "embedded:smollm2", "gemma3-270m": "embedded:gemma3-270m"}


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _setup(name: str) -> tuple[object, float]:
    start = time.perf_counter()
    config = config_from_dict(
        {
            "task_model": {"kind": "causal_lm", "name_or_path": MODELS[name], "cache_size": 0},
            "template": "Review: {sentence}\n{prompt}",
            "verbalizers": [" negative", " positive"],
        }
    )
    task_model = Task.from_config(config).task_model
    assert task_model.prefix_caching and task_model._use_head_shortcut and not task_model.multi_token
    return task_model, time.perf_counter() - start


def measure_call(task_model, prompts: list[str], texts: list[str], repeats: int) -> dict:
    """The split of one scoring call of ``prompts`` x ``texts`` (see the module docstring)."""
    recorded: list[torch.Tensor] = []
    head = task_model._apply_head

    def spy(hidden: torch.Tensor) -> torch.Tensor:
        recorded.append(hidden.detach().clone())
        return head(hidden)

    task_model._apply_head = spy  # type: ignore[method-assign]
    task_model.score(prompts, texts)
    del task_model._apply_head
    hidden_batches = recorded

    call_s, scores = _timed(lambda: task_model.score(prompts, texts), repeats)
    verb = task_model._verbalizer_tensor
    weight = task_model.model.get_output_embeddings().weight

    def head_stage() -> list[torch.Tensor]:  # what the call does: all logits, log-softmax, two columns
        with torch.inference_mode():
            return [torch.log_softmax(head(h).float(), -1)[..., verb] for h in hidden_batches]

    def matmul_only() -> list[torch.Tensor]:
        with torch.inference_mode():
            return [head(h) for h in hidden_batches]

    logits_batches = matmul_only()

    def normalise_only() -> list[torch.Tensor]:  # the log-softmax and the two columns, on the logits
        with torch.inference_mode():
            return [torch.log_softmax(logits.float(), -1)[..., verb] for logits in logits_batches]

    def logsumexp_stage() -> list[torch.Tensor]:  # the same scores without materialising the log-softmax
        with torch.inference_mode():
            out = []
            for h in hidden_batches:
                logits = head(h).float()
                out.append(logits[..., verb] - torch.logsumexp(logits, -1, keepdim=True))
            return out

    def verbalizer_rows_only() -> list[torch.Tensor]:  # unnormalised: other scores (a lower bound)
        with torch.inference_mode():
            return [h @ weight[verb].T for h in hidden_batches]

    # the replays are cheap: interleaved, 2 x as many repeats, medians
    variants = {
        "head": head_stage,
        "matmul": matmul_only,
        "normalise": normalise_only,
        "logsumexp": logsumexp_stage,
        "rows": verbalizer_rows_only,
    }
    times: dict[str, list[float]] = {key: [] for key in variants}
    outputs: dict[str, object] = {}
    for _ in range(2 * repeats):
        for key, fn in variants.items():
            seconds, outputs[key] = _timed(fn, 1)
            times[key].append(seconds)
    head_s, matmul_s, normalise_s, lse_s, rows_s = (statistics.median(times[key]) for key in variants)
    reference, lse_out = outputs["head"], outputs["logsumexp"]
    lse_diff = max(float((a - b).abs().max()) for a, b in zip(reference, lse_out, strict=True))
    return {
        "prompts": len(prompts),
        "examples": len(texts),
        "rows": len(prompts) * len(texts),
        "head_batches": len(hidden_batches),
        "call_s": call_s,
        "head_s": head_s,
        "head_matmul_s": matmul_s,
        "head_normalise_s": normalise_s,
        "body_s": call_s - head_s,
        "head_over_call": head_s / call_s,
        "body_over_call": (call_s - head_s) / call_s,
        "logsumexp_head_s": lse_s,
        "logsumexp_over_head": lse_s / head_s,
        "logsumexp_max_abs_diff": lse_diff,
        "verbalizer_rows_head_s": rows_s,
        "verbalizer_rows_over_call": rows_s / call_s,
        "scores_finite": bool(torch.isfinite(scores).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--eval-examples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train = load_file(Path(args.data_dir) / "train.tsv").texts[: args.examples]
    test = load_file(Path(args.data_dir) / "test.tsv").texts[: args.eval_examples]
    prompts = PROMPTS[: args.prompts]
    results = {
        "device": "cpu",
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "batch_size": 64,
        "repeats": args.repeats,
        "command": " ".join(["python", *sys.argv]),
        "models": {},
    }
    print(
        f"cpu, float32, {results['torch_threads']} thread(s), batch 64, template 'Review: {{sentence}}\\n{{prompt}}', "
        f"median of {args.repeats}"
    )
    print(
        f"training call: {len(prompts)} prompts x {len(train)} SST-2 train reviews, the reviews' key/value caches warm"
    )
    print(f"eval call: 'Sentiment:' x {len(test)} SST-2 test reviews, each read once (full forward)")
    for name in args.models:
        task_model, load_s = _setup(name)
        weight = task_model.model.get_output_embeddings().weight
        entry = {
            "model": MODELS[name],
            "architecture": type(task_model.model).__name__,
            "parameters": sum(p.numel() for p in task_model.model.parameters()),
            "vocab_size": int(weight.shape[0]),
            "hidden_size": int(weight.shape[1]),
            "load_s": load_s,
        }
        task_model.score(WARMUP, train)  # the train reviews' key/value caches: the steady state of training
        entry["training"] = measure_call(task_model, prompts, train, args.repeats)
        entry["eval"] = measure_call(task_model, ["Sentiment:"], test, args.repeats)
        results["models"][name] = entry
        print(
            f"\n{entry['model']} ({entry['architecture']}, {entry['parameters'] / 1e6:.1f} M parameters, head "
            f"{entry['vocab_size']} x {entry['hidden_size']} = {entry['vocab_size'] * entry['hidden_size'] / 1e6:.1f} M)"
        )
        for case in ("training", "eval"):
            r = entry[case]
            print(
                f"  {case} call: {r['call_s'] * 1e3:.0f} ms for {r['rows']} rows; head {r['head_s'] * 1e3:.0f} ms = "
                f"{r['head_over_call']:.1%} of the call (matmul {r['head_matmul_s'] * 1e3:.0f} ms, log-softmax "
                f"{r['head_normalise_s'] * 1e3:.0f} ms), body {r['body_s'] * 1e3:.0f} ms = {r['body_over_call']:.1%}"
            )
            print(
                f"    log-sum-exp instead of log-softmax: {r['logsumexp_over_head']:.2f} x the head stage "
                f"(max |diff| {r['logsumexp_max_abs_diff']:.1e}); verbalizer rows only (unnormalised): "
                f"{r['verbalizer_rows_head_s'] * 1e3:.2f} ms"
            )
        del task_model
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
