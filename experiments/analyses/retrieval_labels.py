"""Why per-input demonstrations help or hurt: how the retrieved demonstrations' labels relate to
the input's and to the model's prediction.

For a ``demos.select: nearest`` config (classification) and the outcome file its
``rlprompt eval --save-outcomes`` wrote, the retrieval is redone (the embedded encoder, no LM)
and the script reports: how often the prediction is the label of the last demonstration (the
one next to the input), how often that label is the input's gold label, and accuracy by the
fraction of demonstrations that share the gold label.

    python experiments/analyses/retrieval_labels.py --config experiments/configs/sst2-smollm2-retrieval.yaml \\
        --outcomes experiments/results/retrieval-sst2-smollm2/test.outcomes.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--outcomes", required=True, help="the outcome file of rlprompt eval --save-outcomes")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rlprompt.config import load_config
    from rlprompt.data import load_task_data
    from rlprompt.outcomes import read_outcomes
    from rlprompt.retrieval import DemoRetriever
    from rlprompt.task_models.embedding import SentenceEncoder
    from rlprompt.template import DemoPool

    config = load_config(args.config, args.overrides)
    data = load_task_data(config.data, num_classes=len(config.verbalizers))
    train, split = data.train, data.split(args.split)
    words = config.label_words
    pool = DemoPool(config.demos.template, list(train.texts), [words[y] for y in train.labels], list(train.labels))
    d = config.demos
    retriever = DemoRetriever.build(pool, SentenceEncoder(d.encoder), k=d.k, order=d.order, balanced=d.balanced)
    blocks = retriever.select(list(split.texts))
    outcomes = read_outcomes(args.outcomes)["outcomes"]
    if outcomes["n"] != len(split):
        raise SystemExit(f"{args.outcomes} holds {outcomes['n']} examples, the {args.split} split {len(split)}")
    labels = np.asarray(pool.labels)
    gold, pred = np.asarray(split.labels), np.asarray(outcomes["predictions"])
    last = np.asarray([labels[ids[-1]] for ids in blocks])
    agree = np.asarray([(labels[ids] == g).mean() for ids, g in zip(blocks, gold, strict=True)])
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "outcomes": args.outcomes,
        "n": len(split),
        "accuracy": float((pred == gold).mean()),
        "prediction_is_last_demo_label": float((pred == last).mean()),
        "last_demo_label_is_gold": float((last == gold).mean()),
        "demos_sharing_gold_label": float(agree.mean()),
        "by_agreement": {
            f"{f:.2f}": {"n": int(m.sum()), "accuracy": float((pred[m] == gold[m]).mean())}
            for f in sorted(set(agree.round(2)))
            for m in [np.isclose(agree, f)]
        },
        "most_shown": Counter(i for ids in blocks for i in ids).most_common(5),
    }
    print(
        f"{args.config} {' '.join(args.overrides)}: {len(split)} {args.split} inputs, k={d.k}, {d.order}"
        f"{', balanced' if d.balanced else ''}"
    )
    print(
        f"accuracy {result['accuracy']:.4f}; the prediction is the last demonstration's label on "
        f"{result['prediction_is_last_demo_label']:.3f} of inputs, which is the gold label on "
        f"{result['last_demo_label_is_gold']:.3f}; demonstrations sharing the gold label: "
        f"{result['demos_sharing_gold_label']:.3f} on average"
    )
    for f, row in result["by_agreement"].items():
        print(f"  {f} of the demonstrations share the gold label: {row['n']:5d} inputs, accuracy {row['accuracy']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
