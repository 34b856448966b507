"""The router's decision and learning paths, free of any transport.

Deciding: text features → tenant history (cached Valkey counters, in-process novelty) →
the selected policy version's calibrated classifier → the tenant's bandit under its plan's
constraints → a tier, an escalation path and a reason. If the version has no usable model,
or it raises, the rule policy decides and the reason says why: the router never fails a
request because of its own model. Every decision is kept in Valkey for an hour, written
behind the answer in pipelined batches.

Learning: an outcome (Feedback or a completed run) is matched to its kept decision, judged
by :func:`outcome_of` and applied once to the tenant's counters; a canary arm's outcome may
trigger a rollback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from services.kit import errors
from services.kit.ttlcache import TtlCache
from services.router import bandit, canary, explain, fallback, features, policy
from services.router.fallback import Decision
from services.router.features import Features
from services.router.metrics import RouterMetrics
from services.router.registry import PolicyRegistry, Selection
from services.router.store import DecisionRecord, Outcome, RouterStore, TenantState
from services.router.tenants import TenantPolicies, TenantPolicy

_log = logging.getLogger("supportmesh.router.engine")

# Decisions waiting to be written when Valkey is slow; beyond this they are not kept.
MAX_PENDING_DECISIONS = 10_000
# The longest a decision waits for the tenant's counters on a cache miss.
STATE_TIMEOUT_S = 0.2


tier_name = explain.tier_name


@dataclass(frozen=True)
class Report:
    """An outcome to learn from."""

    idempotency_key: str
    decision_id: str
    tenant: str  # the caller's tenant; must own the decision
    final_tier: int
    success: bool
    validators_passed: bool
    actual_cost: float = 0.0
    actual_latency_ms: int = 0
    judge_score: float | None = None  # in [0, 1]; None when no judge scored the answer


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of the learned policy and its canaries."""

    explore_cap: float = 0.05
    prior_strength: float = 20.0
    canary_margin: float = 0.05
    canary_min_samples: int = 50
    canary_confidence: float = 0.95
    state_ttl_s: float = 2.0
    judge_threshold: float = 0.5


def check_judge_score(score: float | None) -> None:
    """Refuse a judge score outside [0, 1] (NaN included)."""
    if score is not None and not 0.0 <= score <= 1.0:
        raise errors.InvalidArgument(
            f"judge_score must be between 0 and 1, got {score}", field="judge_score"
        )


def outcome_of(report: Report, record: DecisionRecord, judge_threshold: float) -> Outcome:
    """How a report counts for learning.

    The final answer is accepted when the report says it succeeded and, if a judge scored it,
    the score is at least ``judge_threshold``: a judge can fail a reported success, never
    rescue a failure. The decided tier succeeded first time when it gave that accepted answer
    itself and, for a request with a strict JSON schema, its validators passed — otherwise
    the answer does not stand and the decision counts as a misroute.
    """
    final = report.final_tier or record.tier
    judged_poor = report.judge_score is not None and report.judge_score < judge_threshold
    accepted = report.success and not judged_poor
    first_success = (
        final == record.tier and accepted and (report.validators_passed or not record.strict)
    )
    return Outcome(report.idempotency_key, record, final, first_success, accepted)


class Router:
    """Decides tiers and learns from outcomes (see the module docstring)."""

    def __init__(
        self,
        registry: PolicyRegistry,
        tenants: TenantPolicies,
        store: RouterStore | None,
        metrics: RouterMetrics,
        config: EngineConfig,
        novelty: features.NoveltyIndex | None = None,
    ) -> None:
        """Wire the parts; ``store`` None means no Valkey (decisions are not kept)."""
        self.registry = registry
        self.tenants = tenants
        self.store = store
        self.metrics = metrics
        self.config = config
        self.novelty = novelty or features.NoveltyIndex()
        self._state: TtlCache[str, TenantState] = TtlCache(self._load_state, config.state_ttl_s)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: list[DecisionRecord] = []
        self._flushing: asyncio.Task[None] | None = None

    def _keep(self, record: DecisionRecord) -> None:
        # Write-behind: the decision is answered without waiting for Valkey, and decisions
        # made while a write is in flight go out together in the next pipelined round trip.
        # Feedback comes after a model has answered (≥ 100 ms later), by when it is written.
        if self.store is None:
            return
        if len(self._pending) >= MAX_PENDING_DECISIONS:
            self.metrics.state_errors.labels("decision_backlog_full").inc()
            return
        self._pending.append(record)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.flush_decisions())

    async def flush_decisions(self) -> None:
        """Write the decisions waiting to be kept."""
        while self._pending and self.store is not None:
            batch, self._pending = self._pending, []
            try:
                await self.store.save_decisions(batch)
            except Exception:  # noqa: BLE001 - an unkept decision loses learning, not the answer
                self.metrics.state_errors.labels("save_decision").inc(len(batch))
                _log.warning("decisions not kept; their feedback will not apply", exc_info=True)

    async def _load_state(self, tenant: str) -> TenantState:
        assert self.store is not None
        try:
            async with asyncio.timeout(STATE_TIMEOUT_S):
                return await self.store.tenant_state(tenant)
        except Exception:
            self.metrics.state_errors.labels("tenant_state").inc()
            if self._state.peek(tenant) is not None:
                raise  # the cache keeps serving the last counters read
            _log.warning("tenant state unreadable; deciding without history", exc_info=True)
            # Cached like a real answer, so a Valkey outage costs one timeout per TTL, not
            # one per decision.
            return TenantState()

    async def tenant_state(self, tenant: str) -> TenantState:
        """The tenant's learning counters (cached); empty when Valkey cannot be read."""
        if self.store is None:
            return TenantState()
        return await self._state.get(tenant)

    async def decide(
        self, tenant: str, query: str, context: Mapping[str, Any], preference: int
    ) -> Decision:
        """Pick the first tier for a request."""
        started = time.perf_counter()
        decision_id = uuid.uuid4().hex
        text = features.analyze(query, context)
        plan = await self.tenants.get(tenant)
        state = await self.tenant_state(tenant)
        feats = Features(
            text,
            self.novelty.score_and_add(tenant, text.bow),
            state.failure_rate(text.intent),
            preference,
        )
        selection = self.registry.select(tenant, decision_id)
        decision, predictions, problem = None, (0.0, 0.0, 0.0), selection.problem
        if selection.model is not None:
            try:
                decision, predictions = self._learned(decision_id, feats, plan, state, selection)
            except Exception as error:  # noqa: BLE001 - the model failing means rules decide
                problem = f"model {selection.version} failed: {type(error).__name__}: {error}"
                _log.exception("learned policy failed; rules decide")
        if decision is None:
            decision = fallback.rules(decision_id, query, context, preference, plan, problem)
            self.metrics.fallbacks.labels(
                "model_error" if selection.model is not None else "no_model"
            ).inc()
        record = DecisionRecord(
            decision_id=decision_id,
            tenant=tenant,
            tier=decision.tier,
            predictions=predictions,
            policy_version=decision.policy_version,
            intent=text.intent,
            strict=text.json_schema_strictness > 0,
            cost_estimate=decision.cost_estimate,
            latency_estimate=decision.latency_estimate,
            arm=selection.arm,
            canary_version=selection.canary_version,
            source=decision.source,
            features=feats.summary(),
        )
        self._keep(record)
        self.metrics.decisions.labels(tier_name(decision.tier), decision.source).inc()
        self.metrics.decision_latency.observe((time.perf_counter() - started) * 1000)
        return decision

    def _learned(
        self,
        decision_id: str,
        feats: Features,
        plan: TenantPolicy,
        state: TenantState,
        selection: Selection,
    ) -> tuple[Decision, tuple[float, float, float]]:
        assert selection.model is not None
        row = features.model_input(feats)
        predictions = selection.model.predict(row)
        tokens = feats.text.token_count
        costs = [policy.estimate(t, tokens)[0] for t in bandit.TIERS]
        constraints = bandit.Constraints(
            allowed=plan.allowed_tiers,
            error_cost_usd=plan.error_cost_usd,
            prefer_slm=plan.prefer_slm,
            explore=plan.explore,
            explore_cap=self.config.explore_cap,
            prior_strength=self.config.prior_strength,
        )
        # Seeded by the decision id: the same id always draws the same way (audits, tests).
        rng = random.Random(int(decision_id[:16], 16))  # noqa: S311 - sampling, not secrets
        choice = bandit.choose(
            predictions, costs, state.arms, constraints, feats.tier_preference, rng
        )
        if choice.explored:
            self.metrics.explorations.inc()
        path = bandit.escalation_path(choice.tier, constraints.allowed)
        assert selection.model is not None
        reasoning = explain.learned(choice, selection, selection.model, row, feats, plan, path)
        cost, latency = policy.estimate(choice.tier, tokens)
        decision = Decision(
            tier=choice.tier,
            confidence=round(choice.p_success, 4),
            reasoning=reasoning,
            cost_estimate=cost,
            latency_estimate=latency,
            escalation_path=path,
            decision_id=decision_id,
            policy_version=selection.version,
            source=choice.mode,
        )
        return decision, predictions

    async def learn(self, report: Report) -> bool:
        """Apply an outcome once; False when it was applied before."""
        check_judge_score(report.judge_score)
        if self.store is None:
            raise errors.Unavailable("the router has no Valkey configured to learn from outcomes")
        try:
            record = await self.store.load_decision(report.decision_id)
            if record is None and self._pending:
                # The decision may still wait in this replica's write-behind batch.
                await self.flush_decisions()
                record = await self.store.load_decision(report.decision_id)
        except RedisError as error:
            raise errors.Unavailable("the router's state store is unreachable; retry") from error
        if record is None or (report.tenant and record.tenant != report.tenant):
            # Another tenant's decision reads as missing: its existence is not disclosed.
            raise errors.NotFound(
                f"decision {report.decision_id} not found or expired", field="decision_id"
            )
        outcome = outcome_of(report, record, self.config.judge_threshold)
        try:
            applied = await self.store.apply(outcome)
        except RedisError as error:
            raise errors.Unavailable("the router's state store is unreachable; retry") from error
        if not applied.applied:
            return False
        self._state.invalidate(record.tenant)
        self.metrics.outcome(
            tier_name(record.tier), outcome.final_success, misroute=not outcome.first_success
        )
        if report.success and not outcome.final_success:
            self.metrics.judge_rejections.inc()
        if report.actual_cost > 0:
            self.metrics.expected_cost.inc(record.cost_estimate)
            self.metrics.actual_cost.inc(report.actual_cost)
        if report.actual_latency_ms > 0:
            self.metrics.expected_latency.observe(record.latency_estimate)
            self.metrics.actual_latency.observe(report.actual_latency_ms)
        if applied.arms is not None and self.registry.is_live_canary(record.canary_version):
            verdict = canary.evaluate(
                applied.arms,
                margin=self.config.canary_margin,
                min_samples=self.config.canary_min_samples,
                confidence=self.config.canary_confidence,
            )
            if verdict.rollback:
                task = asyncio.create_task(
                    self.registry.rollback(record.canary_version, record.tenant, verdict.reason)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        """Wait for background work (rollbacks) to finish."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background work, keep pending decisions and stop cache reloads."""
        await self.flush_decisions()
        await self.drain()
        await self._state.aclose()
