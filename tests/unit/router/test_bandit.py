import random

import pytest

from services.router import bandit
from supportmesh.spec.v1 import tier_pb2 as pb

COSTS = (0.0001, 0.0005, 0.005)
ALL = (pb.SLM_A, pb.SLM_B, pb.LLM)


def constraints(**overrides: object) -> bandit.Constraints:
    values: dict[str, object] = {"allowed": ALL, "error_cost_usd": 0.02}
    values.update(overrides)
    return bandit.Constraints(**values)  # type: ignore[arg-type]


def test_greedy_choice_minimises_cost_plus_lambda_error() -> None:
    rng = random.Random(1)
    easy = bandit.choose(
        (0.99, 0.99, 0.99), COSTS, {}, constraints(explore=False), pb.BALANCED, rng
    )
    hard = bandit.choose((0.1, 0.3, 0.98), COSTS, {}, constraints(explore=False), pb.BALANCED, rng)
    assert easy.tier == pb.SLM_A
    assert hard.tier == pb.LLM
    assert hard.losses[pb.LLM] == pytest.approx(COSTS[2] + 0.02 * 0.02)


def test_unobserved_tenant_starts_at_the_model() -> None:
    assert bandit.adjust(0.73, bandit.ArmStats(), 20.0) == pytest.approx(0.73)


def test_tenant_outcomes_move_the_estimate() -> None:
    # The model predicted 0.9 on average but this tenant's SLM_A answers fail half the time.
    bad = bandit.ArmStats(trials=200, successes=100, predicted=180)
    good = bandit.ArmStats(trials=200, successes=196, predicted=180)
    assert bandit.adjust(0.9, bad, 20.0) < 0.6
    assert bandit.adjust(0.9, good, 20.0) > 0.95


def test_exploration_is_bounded_by_the_cap() -> None:
    rng = random.Random(7)
    # Close losses and no evidence: Thompson draws disagree with the greedy tier often.
    p = (0.8, 0.83, 0.85)
    costs = (0.001, 0.0015, 0.002)
    n, cap = 4000, 0.05
    explored = sum(
        bandit.choose(p, costs, {}, constraints(explore_cap=cap), pb.BALANCED, rng).explored
        for _ in range(n)
    )
    assert 0 < explored <= n * cap + 4 * (n * cap * (1 - cap)) ** 0.5
    none = sum(
        bandit.choose(p, costs, {}, constraints(explore=False), pb.BALANCED, rng).explored
        for _ in range(500)
    )
    assert none == 0


@pytest.mark.parametrize("preference", [pb.FAST, pb.BALANCED, pb.ACCURATE])
def test_disallowed_tiers_are_never_chosen(preference: int) -> None:
    rng = random.Random(3)
    limited = constraints(allowed=(pb.SLM_A, pb.SLM_B), explore_cap=1.0)
    for _ in range(2000):
        p = (rng.random(), rng.random(), 1.0)
        choice = bandit.choose(p, COSTS, {}, limited, preference, rng)
        assert choice.tier in (pb.SLM_A, pb.SLM_B)
        assert pb.LLM not in choice.losses


def test_degrade_switch_takes_the_cheapest_acceptable_slm_and_never_explores() -> None:
    rng = random.Random(5)
    degrade = constraints(prefer_slm=True, explore_cap=1.0)
    easy = bandit.choose((0.9, 0.95, 0.99), COSTS, {}, degrade, pb.BALANCED, rng)
    middling = bandit.choose((0.2, 0.7, 0.99), COSTS, {}, degrade, pb.BALANCED, rng)
    hard = bandit.choose((0.05, 0.1, 0.99), COSTS, {}, degrade, pb.BALANCED, rng)
    accurate = bandit.choose((0.9, 0.95, 0.99), COSTS, {}, degrade, pb.ACCURATE, rng)
    assert (easy.tier, middling.tier, hard.tier, accurate.tier) == (
        pb.SLM_A, pb.SLM_B, pb.SLM_B, pb.SLM_B,
    )  # fmt: skip
    assert {c.mode for c in (easy, middling, hard, accurate)} == {"degrade"}
    for _ in range(500):
        assert not bandit.choose((0.5, 0.5, 0.99), COSTS, {}, degrade, pb.BALANCED, rng).explored


def test_accurate_takes_the_most_capable_allowed_tier_and_fast_lowers_lambda() -> None:
    rng = random.Random(9)
    plain = constraints(explore=False)
    assert bandit.choose((1.0, 1.0, 1.0), COSTS, {}, plain, pb.ACCURATE, rng).tier == pb.LLM
    limited = constraints(allowed=(pb.SLM_A, pb.SLM_B), explore=False)
    assert bandit.choose((1.0, 1.0, 1.0), COSTS, {}, limited, pb.ACCURATE, rng).tier == pb.SLM_B
    p = (0.9, 0.95, 0.99)
    balanced = bandit.choose(p, COSTS, {}, plain, pb.BALANCED, rng)
    fast = bandit.choose(p, COSTS, {}, plain, pb.FAST, rng)
    assert fast.losses[pb.SLM_A] < balanced.losses[pb.SLM_A]


def test_escalation_path_lists_allowed_tiers_above() -> None:
    assert bandit.escalation_path(pb.SLM_A, ALL) == (pb.SLM_B, pb.LLM)
    assert bandit.escalation_path(pb.SLM_A, (pb.SLM_A, pb.SLM_B)) == (pb.SLM_B,)
    assert bandit.escalation_path(pb.LLM, ALL) == ()
