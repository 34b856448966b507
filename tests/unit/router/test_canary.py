import uuid

import pytest

from services.router import canary


def test_canary_share_is_deterministic_and_close_to_the_percentage() -> None:
    ids = [uuid.UUID(int=i).hex for i in range(20_000)]
    share = sum(canary.in_canary(i, 10) for i in ids) / len(ids)
    assert share == pytest.approx(0.10, abs=0.01)
    assert [canary.in_canary(i, 10) for i in ids[:100]] == [
        canary.in_canary(i, 10) for i in ids[:100]
    ]
    assert not any(canary.in_canary(i, 0) for i in ids[:1000])


def judge(counts: canary.ArmCounts) -> canary.Verdict:
    return canary.evaluate(counts, margin=0.05, min_samples=50)


def test_no_verdict_before_the_minimum_samples() -> None:
    verdict = judge(canary.ArmCounts(40, 0, 400, 400))
    assert not verdict.rollback
    assert "waiting" in verdict.reason


def test_a_clearly_worse_canary_is_rolled_back() -> None:
    verdict = judge(canary.ArmCounts(100, 70, 900, 855))
    assert verdict.rollback
    assert verdict.p_value < 0.05
    assert verdict.canary_rate < verdict.stable_rate


def test_an_equal_canary_or_one_within_the_margin_stays() -> None:
    assert not judge(canary.ArmCounts(100, 95, 900, 855)).rollback
    assert not judge(canary.ArmCounts(200, 184, 1800, 1710)).rollback
    assert not judge(canary.ArmCounts(100, 100, 100, 100)).rollback


def test_a_small_drop_needs_many_samples() -> None:
    few = judge(canary.ArmCounts(60, 48, 600, 540))  # 80 % vs 90 %
    many = judge(canary.ArmCounts(2000, 1600, 20000, 18000))
    assert not few.rollback
    assert many.rollback
    assert many.z > few.z


def test_the_reason_gives_both_arms_rates_sample_sizes_and_the_margin() -> None:
    verdict = canary.evaluate(
        canary.ArmCounts(100, 70, 900, 855), margin=0.05, min_samples=50, confidence=0.95
    )
    assert verdict.reason.startswith(
        "canary 70/100 succeeded (0.700) vs stable 855/900 succeeded (0.950); "
        "margin 0.050 at 95% confidence: "
    )
    assert f"z={verdict.z:.2f}, p={verdict.p_value:.4f}" in verdict.reason
