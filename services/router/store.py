"""The router's state in Valkey: decisions, per-tenant learning counters, canary arms.

Keys (all under ``router:``):

- ``decision:{id}`` — the decision's context as JSON, kept ``decision_ttl_s`` (1 h) so
  Feedback and run outcomes can find what was decided and why.
- ``bandit:{tenant}`` hash — per tier ``{tier}:n`` trials, ``{tier}:s`` successes and
  ``{tier}:m`` the sum of the model's predictions (the Beta posteriors' evidence).
- ``failures:{tenant}`` hash — per intent ``{intent}:n`` and ``{intent}:f``: how often SLM_A,
  when tried first, failed (the ``historical_failure_rate`` feature).
- ``canary:{version}:{tenant}`` hash — ``canary_n/_s`` and ``stable_n/_s`` outcome counts.
- ``applied:{key}`` and ``outcome:{decision}:{tier}`` — idempotency guards (24 h).

An outcome is applied by one Lua script, atomically: unless its idempotency key (Feedback
request id or run id) or the decision × tier it reports on was applied before, it sets both
guards and increments the counters — so a redelivered event or a retried Feedback, even
racing on two replicas, counts once, and a crash cannot leave half an update.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.router import canary, features
from services.router.bandit import TIERS, ArmStats
from supportmesh.spec.v1 import tier_pb2 as pb

PREFIX = "router:"
IDEMPOTENCY_TTL_S = 24 * 3600

_APPLY = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
  return {0}
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {0} end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
for i = 0, tonumber(ARGV[2]) - 1 do
  local base = 3 + i * 3
  redis.call('HINCRBYFLOAT', KEYS[tonumber(ARGV[base])], ARGV[base + 1], ARGV[base + 2])
end
local arms = redis.call('HMGET', KEYS[5], 'canary_n', 'canary_s', 'stable_n', 'stable_s')
return {1, arms[1] or '0', arms[2] or '0', arms[3] or '0', arms[4] or '0'}
"""


@dataclass(frozen=True)
class DecisionRecord:
    """What was decided, kept for Feedback and run outcomes."""

    decision_id: str
    tenant: str
    tier: int
    predictions: tuple[float, float, float]
    policy_version: str
    intent: str
    strict: bool
    cost_estimate: float
    latency_estimate: int
    arm: str = ""  # "canary" or "stable" when a canary applied to the tenant, else ""
    canary_version: str = ""
    source: str = "bandit"  # what decided; "rules" decisions carry no model predictions
    features: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The JSON stored in Valkey."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> DecisionRecord:
        """Parse a stored record."""
        data = json.loads(raw)
        data["predictions"] = tuple(data["predictions"])
        return cls(**data)


@dataclass(frozen=True)
class TenantState:
    """The tenant's learning counters as last read."""

    arms: Mapping[int, ArmStats] = field(default_factory=dict)
    failures: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def failure_rate(self, intent: str) -> float:
        """Smoothed SLM_A failure rate for an intent."""
        trials, failures = self.failures.get(intent, (0.0, 0.0))
        return features.failure_rate(failures, trials)


@dataclass(frozen=True)
class Outcome:
    """How a decision turned out, from Feedback or a run event."""

    idempotency_key: str
    record: DecisionRecord
    final_tier: int
    first_success: bool  # the decided tier's answer was accepted
    final_success: bool


@dataclass(frozen=True)
class Applied:
    """Result of applying an outcome."""

    applied: bool
    arms: canary.ArmCounts | None = None


def increments(outcome: Outcome) -> list[tuple[int, str, float]]:
    """(key index, field, amount) updates for an outcome; key 3 bandit, 4 failures, 5 canary."""
    record, tier = outcome.record, outcome.record.tier
    updates: list[tuple[int, str, float]] = []
    # The posteriors' evidence pairs outcomes with the model's predictions: rule-policy
    # decisions have none, so they teach the failure rates and canary arms only.
    learned = record.source != "rules"
    if learned:
        updates += [
            (3, f"{tier}:n", 1.0),
            (3, f"{tier}:s", float(outcome.first_success)),
            (3, f"{tier}:m", record.predictions[tier - 1]),
        ]
    if learned and outcome.final_tier > tier:
        final = outcome.final_tier
        updates += [
            (3, f"{final}:n", 1.0),
            (3, f"{final}:s", float(outcome.final_success)),
            (3, f"{final}:m", record.predictions[final - 1]),
        ]
    if tier == pb.SLM_A:
        updates += [
            (4, f"{record.intent}:n", 1.0),
            (4, f"{record.intent}:f", float(not outcome.first_success)),
        ]
    if record.arm:
        updates += [
            (5, f"{record.arm}_n", 1.0),
            (5, f"{record.arm}_s", float(outcome.first_success)),
        ]
    return updates


class RouterStore:
    """Valkey access for the router (see the module docstring for the keys)."""

    def __init__(self, redis: Redis, *, decision_ttl_s: int = 3600) -> None:
        """Use ``redis`` (with ``decode_responses=True``); keep decisions ``decision_ttl_s``."""
        self.redis = redis
        self._decision_ttl_s = decision_ttl_s
        self._apply = redis.register_script(_APPLY)

    async def save_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Keep decisions' contexts for ``decision_ttl_s``, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                key = f"{PREFIX}decision:{record.decision_id}"
                pipe.set(key, record.to_json(), ex=self._decision_ttl_s)
            await pipe.execute()

    async def load_decision(self, decision_id: str) -> DecisionRecord | None:
        """A kept decision, or None once expired or unknown."""
        raw = await self.redis.get(f"{PREFIX}decision:{decision_id}")
        return None if raw is None else DecisionRecord.from_json(raw)

    async def tenant_state(self, tenant: str) -> TenantState:
        """The tenant's bandit and failure counters, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{PREFIX}bandit:{tenant}")
            pipe.hgetall(f"{PREFIX}failures:{tenant}")
            bandit_raw, failures_raw = await pipe.execute()
        return TenantState(_arms(bandit_raw), _failures(failures_raw))

    async def apply(self, outcome: Outcome) -> Applied:
        """Apply an outcome once (see the module docstring)."""
        record = outcome.record
        canary_key = (
            f"{PREFIX}canary:{record.canary_version}:{record.tenant}"
            if record.arm
            else f"{PREFIX}canary:none"
        )
        keys = [
            f"{PREFIX}applied:{outcome.idempotency_key}",
            f"{PREFIX}outcome:{record.decision_id}:{outcome.final_tier}",
            f"{PREFIX}bandit:{record.tenant}",
            f"{PREFIX}failures:{record.tenant}",
            canary_key,
        ]
        updates = increments(outcome)
        args: list[str | int | float] = [IDEMPOTENCY_TTL_S, len(updates)]
        for index, name, amount in updates:
            args += [index, name, repr(float(amount))]
        reply: Sequence[Any] = await self._apply(keys=keys, args=args)
        if not int(reply[0]):
            return Applied(False)
        counts = [int(float(value)) for value in reply[1:5]]
        return Applied(True, canary.ArmCounts(*counts) if record.arm else None)

    async def arm_counts(self, version: str, tenant: str) -> canary.ArmCounts:
        """The canary and stable outcome counts of one canary version for one tenant."""
        values = await self.redis.hmget(
            f"{PREFIX}canary:{version}:{tenant}", ["canary_n", "canary_s", "stable_n", "stable_s"]
        )
        return canary.ArmCounts(*(int(float(v or 0)) for v in values))


def _arms(raw: Mapping[str, str]) -> dict[int, ArmStats]:
    arms: dict[int, ArmStats] = {}
    for tier in TIERS:
        trials = float(raw.get(f"{tier}:n", 0))
        if trials:
            arms[tier] = ArmStats(
                trials, float(raw.get(f"{tier}:s", 0)), float(raw.get(f"{tier}:m", 0))
            )
    return arms


def _failures(raw: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    found: dict[str, tuple[float, float]] = {}
    for key, value in raw.items():
        intent, _, kind = key.rpartition(":")
        trials, failures = found.get(intent, (0.0, 0.0))
        found[intent] = (float(value), failures) if kind == "n" else (trials, float(value))
    return found
