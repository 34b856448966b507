"""Quota periods, counter keys and limits."""

from __future__ import annotations

from datetime import UTC, datetime

from services.kit import quota


def test_period_and_reset() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    assert quota.period(moment) == "202612"
    assert quota.seconds_to_next_period(moment) == 30
    assert quota.seconds_to_next_period(datetime(2026, 3, 1, tzinfo=UTC)) == 31 * 24 * 3600


def test_counter_keys_share_the_tenants_hash_tag() -> None:
    tokens_key, cost_key = quota.counter_keys("acme", datetime(2026, 2, 3, tzinfo=UTC))
    assert tokens_key == "quota:{acme}:202602:tokens"
    assert cost_key == "quota:{acme}:202602:cost"


def test_exceeded() -> None:
    limits = quota.Limits(tokens_per_month=100, cost_per_month_usd=1.5)
    assert quota.exceeded(quota.Usage(99, 1_499_999), limits) is None
    assert quota.exceeded(quota.Usage(100, 0), limits) == quota.TOKENS
    assert quota.exceeded(quota.Usage(0, 1_500_000), limits) == quota.COST
    assert quota.exceeded(quota.Usage(10**9, 10**12), quota.Limits()) is None


def test_quota_error_says_when_to_retry() -> None:
    error = quota.quota_error(quota.COST, datetime(2026, 5, 31, 23, 0, tzinfo=UTC))
    assert error.http_status == 429
    assert error.retry_after_s == 3600
    assert error.metadata == {"meter": "cost", "period": "202605"}
