"""RL helpers against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from rlprompt.rl import (
    discounted_returns,
    gae,
    polyak_update,
    ppo_policy_loss,
    ppo_value_loss,
    soft_values,
    sql_multi_step_loss,
    sql_single_step_loss,
)


def test_discounted_returns_cut_at_done():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    dones = torch.tensor([[False], [True], [False]])
    # G2 = 3; G1 = 2 (episode ends after step 1); G0 = 1 + 0.5 * 2 = 2
    assert discounted_returns(rewards, dones, gamma=0.5).flatten().tolist() == [2.0, 2.0, 3.0]


def test_gae_by_hand():
    rewards = torch.tensor([[0.0], [1.0]])
    values = torch.tensor([[0.5], [0.2]])
    dones = torch.tensor([[False], [True]])
    last_value = torch.tensor([9.0])  # ignored: the episode ended
    gamma, lam = 0.9, 0.8
    delta1 = 1.0 - 0.2
    delta0 = 0.0 + gamma * 0.2 - 0.5
    a1 = delta1
    a0 = delta0 + gamma * lam * a1
    adv, ret = gae(rewards, values, dones, last_value, gamma, lam)
    assert adv.flatten().tolist() == pytest.approx([a0, a1])
    assert ret.flatten().tolist() == pytest.approx([a0 + 0.5, a1 + 0.2])


def test_gae_bootstraps_when_not_done():
    adv, _ = gae(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[False]]), torch.tensor([2.0]), 0.5, 1.0)
    assert adv.item() == pytest.approx(1.0 + 0.5 * 2.0)


def test_ppo_clipping_by_hand():
    old = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    new = torch.log(torch.tensor([0.9, 0.5, 0.1]))  # ratios 1.8, 1.0, 0.2
    adv = torch.tensor([1.0, 2.0, -1.0])
    loss, clip_fraction = ppo_policy_loss(new, old, adv, clip=0.2)
    # min(1.8*1, 1.2*1)=1.2 ; min(1*2, 1*2)=2 ; min(0.2*-1, 0.8*-1)=-0.8
    assert loss.item() == pytest.approx(-(1.2 + 2.0 - 0.8) / 3)
    assert clip_fraction.item() == pytest.approx(2 / 3)


def test_ppo_value_loss_clipping():
    values, old, returns = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0])
    assert ppo_value_loss(values, old, returns, None).item() == pytest.approx(0.5)
    # clipped value 0.5 -> error 0.25; unclipped error 1.0; max -> 1.0
    assert ppo_value_loss(values, old, returns, 0.5).item() == pytest.approx(0.5 * 1.0)
    assert ppo_value_loss(torch.tensor([0.9]), old, returns, 0.5).item() == pytest.approx(0.5 * 0.5**2)


def test_polyak_update():
    source, target = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        source.weight.fill_(1.0)
        source.bias.fill_(2.0)
        target.weight.fill_(0.0)
        target.bias.fill_(0.0)
    polyak_update(target, source, tau=0.25)
    assert target.weight.item() == pytest.approx(0.25) and target.bias.item() == pytest.approx(0.5)
    polyak_update(target, source, tau=1.0)
    assert target.weight.item() == 1.0


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_sql_losses_by_hand():
    # One episode of 2 steps, 2 actions; reward 1.0 at the end.
    q = torch.tensor([[[1.0, 0.0], [0.5, 2.0]]], requires_grad=True)
    target_q = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    actions = torch.tensor([[0, 1]])
    rewards = torch.tensor([[0.0, 1.0]])
    lengths = torch.tensor([2])
    v = [_lse(1.0, 0.0), _lse(0.5, 2.0)]
    a = [1.0 - v[0], 2.0 - v[1]]
    vbar = [_lse(0.0, 0.0), _lse(1.0, 1.0)]
    # single step: t=0: -vbar0 + vbar1 + 0 - a0 ; t=1 (last): -vbar1 + 0 + 1 - a1
    r0 = -vbar[0] + vbar[1] - a[0]
    r1 = -vbar[1] + 1.0 - a[1]
    expected_single = 0.5 * (r0**2 + r1**2) / 2
    assert sql_single_step_loss(q, target_q, actions, rewards, lengths).item() == pytest.approx(
        expected_single, abs=1e-6
    )
    # multi step: t=0: -vbar0 + 1 - (a0 + a1) ; t=1: -vbar1 + 1 - a1
    m0 = -vbar[0] + 1.0 - (a[0] + a[1])
    m1 = -vbar[1] + 1.0 - a[1]
    expected_multi = 0.5 * (m0**2 + m1**2) / 2
    loss = sql_multi_step_loss(q, target_q, actions, rewards, lengths)
    assert loss.item() == pytest.approx(expected_multi, abs=1e-6)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert soft_values(target_q)[0, 0].item() == pytest.approx(math.log(2))


def test_sql_losses_ignore_padded_steps():
    q = torch.randn(2, 3, 4)
    target_q = torch.randn(2, 3, 4)
    actions = torch.randint(0, 4, (2, 3))
    rewards = torch.zeros(2, 3)
    rewards[0, 1] = 1.0  # episode 0 has 2 valid steps
    rewards[1, 2] = -1.0
    lengths = torch.tensor([2, 3])
    base = sql_single_step_loss(q, target_q, actions, rewards, lengths)
    q2 = q.clone()
    q2[0, 2] += 100.0  # padding of episode 0 must not matter
    assert sql_single_step_loss(q2, target_q, actions, rewards, lengths).item() == pytest.approx(base.item())
    assert sql_multi_step_loss(q2, target_q, actions, rewards, lengths).item() == pytest.approx(
        sql_multi_step_loss(q, target_q, actions, rewards, lengths).item()
    )


def test_own_cma_es_converges_like_the_cma_package():
    """rlprompt's CMA-ES (plain arrays, so checkpoints hold no pickle) against the reference
    implementation on a 10-d sphere and an ill-conditioned ellipsoid: both reach 1e-10, ours
    within 2x the evaluations."""
    import cma
    import numpy as np

    from rlprompt.agents.cma_es import CMAState

    def ellipsoid(x: np.ndarray) -> float:
        return float(np.sum(10 ** (6 * np.arange(len(x)) / (len(x) - 1)) * x**2))

    for f in (lambda x: float(np.sum(x**2)), ellipsoid):
        ours, rng, evals = CMAState(10, 0.5), np.random.default_rng(1), 0
        ours.mean[:] = 0.5
        while evals < 50_000:
            points = ours.ask(rng)
            losses = np.array([f(p) for p in points])
            evals += len(points)
            ours.tell(points, losses)
            if losses.min() < 1e-10:
                break
        reference, ref_evals = cma.CMAEvolutionStrategy(np.full(10, 0.5), 0.5, {"seed": 1, "verbose": -9}), 0
        while ref_evals < 50_000:
            points = reference.ask()
            losses = [f(np.asarray(p)) for p in points]
            ref_evals += len(points)
            reference.tell(points, losses)
            if min(losses) < 1e-10:
                break
        assert evals < 50_000 and ref_evals < 50_000
        assert evals <= 2 * ref_evals, (evals, ref_evals)
