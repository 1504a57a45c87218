"""Rewards: values computed by hand on tiny inputs, shapes, normalisation and errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlprompt.errors import RewardError
from rlprompt.rewards import (
    accuracy,
    batch_calibrate,
    classification_metrics,
    compute_reward,
    gap,
    gold_log_prob,
    macro_f1,
    per_example_gap,
    prediction_balance,
    zscore,
    zscore_per_input,
)

# Two prompts x three examples x two classes.
LOGITS = torch.tensor(
    [
        [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        [[0.0, 3.0], [0.0, 3.0], [0.0, 3.0]],
    ]
)
LABELS = torch.tensor([0, 1, 0])


def test_accuracy_by_hand():
    # prompt 0: [0, 1, tie]: a tie is no answer and counts as wrong -> 2/3; prompt 1: always class 1 -> 1/3.
    assert accuracy(LOGITS, LABELS).tolist() == pytest.approx([2 / 3, 1 / 3])


def test_macro_f1_by_hand():
    # prompt 0: the tie predicts nothing: F1_0 = 2*1/(1+2) = 2/3, F1_1 = 1 -> 5/6
    # prompt 1: class 0 never predicted -> F1_0 = 0; class 1: tp=1, fp=2 -> F1 = 2/(3+1) = 0.5
    assert macro_f1(LOGITS, LABELS).tolist() == pytest.approx([5 / 6, 0.25])


def test_gold_log_prob_by_hand():
    def ls(a, b):
        return a - math.log(math.exp(a) + math.exp(b))

    expected0 = (ls(2, 0) + ls(1, 0) + ls(1, 1)) / 3
    expected1 = (ls(0, 3) + ls(3, 0) + ls(0, 3)) / 3
    assert gold_log_prob(LOGITS, LABELS).tolist() == pytest.approx([expected0, expected1], abs=1e-6)


def test_gap_reward_piecewise_constants():
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    gap_correct = float(p[0] - p[1])  # positive -> x200
    per_example = per_example_gap(LOGITS[:1, :1], LABELS[:1])
    assert per_example.item() == pytest.approx(200 * gap_correct, abs=1e-4)
    wrong = per_example_gap(torch.tensor([[[0.0, 2.0]]]), torch.tensor([0]))
    assert wrong.item() == pytest.approx(-180 * gap_correct, abs=1e-4)
    custom = gap(torch.tensor([[[0.0, 2.0]]]), torch.tensor([0]), correct_scale=1.0, incorrect_scale=2.0)
    assert custom.item() == pytest.approx(-2 * gap_correct, abs=1e-5)


def test_gap_three_classes_uses_best_other():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]]))
    assert per_example_gap(logits, torch.tensor([1])).item() == pytest.approx(180 * (0.3 - 0.5), abs=1e-4)


def test_balance_term_penalises_collapse():
    balanced = prediction_balance(LOGITS)
    # prompt 0 predicts [0, 1, 0]: histogram (2/3, 1/3); prompt 1 collapses onto class 1.
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(2)
    assert balanced.tolist() == pytest.approx([expected, 0.0], abs=1e-5)
    with_bonus = compute_reward("accuracy", LOGITS, LABELS, balance_weight=0.5)
    assert with_bonus.tolist() == pytest.approx((accuracy(LOGITS, LABELS) + 0.5 * balanced).tolist())


def test_zscores():
    values = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    per_input = zscore_per_input(values)
    assert torch.allclose(per_input, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-5)
    flat = zscore(values)
    assert flat.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert flat.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(RewardError, match="prompts, inputs"):
        zscore_per_input(torch.ones(3))


def test_non_finite_scores_raise_clear_error():
    bad = LOGITS.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(RewardError, match="non-finite"):
        compute_reward("gold_log_prob", bad, LABELS)
    bad[0, 1, 0] = float("inf")
    with pytest.raises(RewardError, match="non-finite"):
        accuracy(bad, LABELS)


def test_shape_and_label_errors():
    with pytest.raises(RewardError, match="labels must be"):
        accuracy(LOGITS, torch.tensor([0, 1]))
    with pytest.raises(RewardError, match="labels must lie"):
        accuracy(LOGITS, torch.tensor([0, 1, 2]))
    with pytest.raises(RewardError, match="unknown reward"):
        compute_reward("bleu", LOGITS, LABELS)


def test_classification_metrics_single_prompt():
    m = classification_metrics(LOGITS[1], LABELS)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["predicted_counts"] == [0, 3]
    assert m["n"] == 3


def test_batch_calibration_removes_a_prompts_lean_towards_one_class():
    # a prompt that separates the classes but leans to class 1: every example gets +2 on it
    separating = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.5, -0.5], [-0.5, 0.5]])
    labels = torch.tensor([0, 1, 0, 1])
    leaning = separating + torch.tensor([0.0, 2.0])
    assert float(accuracy(leaning, labels)) == 0.5  # every answer is class 1
    calibrated = batch_calibrate(leaning)
    # by hand: log-softmax minus its mean over the examples
    by_hand = torch.log_softmax(leaning, -1) - torch.log_softmax(leaning, -1).mean(0)
    assert torch.allclose(calibrated, by_hand, atol=1e-6)
    assert float(accuracy(calibrated, labels)) == 1.0
    # a shift of a class's scores common to all examples does not change the calibrated class
    # probabilities (what rewards and predictions read)
    normalised = torch.log_softmax(calibrated, -1)
    assert torch.allclose(torch.log_softmax(batch_calibrate(separating), -1), normalised, atol=1e-5)
    # [P, N, C]: each prompt is calibrated on its own examples
    both = torch.log_softmax(batch_calibrate(torch.stack([separating, leaning + torch.tensor([5.0, 0.0])])), -1)
    assert torch.allclose(both[0], both[1], atol=1e-5) and torch.allclose(both[0], normalised, atol=1e-5)


def test_calibrated_task_trains_selects_and_refuses_on_calibrated_scores(minilm_task):
    """Training rewards (one batch per prompt), the paired reference and whole-split rewards all
    read scores calibrated over the examples scored together."""
    import dataclasses

    from rlprompt.config import Config, SelectionConfig
    from rlprompt.errors import RLPromptError

    config = Config(calibration="batch", selection=SelectionConfig(paired=True))
    task = dataclasses.replace(minilm_task, config=config, _labels={}, prompt_evals=0)
    prompts, indices = ["It was", "Overall the film felt"], [[0, 3, 5, 7], [1, 2, 8, 9, 10]]
    texts, labels = task.data.train.texts, task.labels("train")

    def expected(prompt: str, idx: list[int]) -> float:
        raw = task.task_model.score([prompt], [texts[i] for i in idx])
        return float(compute_reward("gold_log_prob", batch_calibrate(raw)[0], labels[idx]))

    rewards, accuracies = task.score_requests(prompts, indices)
    for prompt, idx, reward in zip(prompts, indices, rewards, strict=True):
        assert float(reward) == pytest.approx(expected(prompt, idx), abs=1e-5)
        raw_reward = float(
            compute_reward("gold_log_prob", task.task_model.score([prompt], [texts[i] for i in idx])[0], labels[idx])
        )
        assert abs(raw_reward - float(reward)) > 1e-3  # calibration changed the reward
    reference = task.reference_rewards(indices)
    assert reference.tolist() == pytest.approx([expected(config.prompt, idx) for idx in indices], abs=1e-5)
    assert float(task.reward(["It was"], indices=[0, 3, 5, 7])[0]) == pytest.approx(
        expected("It was", [0, 3, 5, 7]), abs=1e-5
    )
    with pytest.raises(RLPromptError, match="1 example leaves every class at the same score"):
        task.reward(["It was"], indices=[4])
