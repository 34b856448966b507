"""A canary that does worse than stable is rolled back through the control plane."""

from __future__ import annotations

import json
import re
import uuid

import asyncpg

from services.router.app import SHIPPED_MODEL
from supportmesh.router.v1 import router_service_pb2 as pb
from tests.integration.router.conftest import Harness, as_tenant

REASON = re.compile(
    r"canary (?P<version>\S+) rolled back automatically for tenant (?P<tenant>\S+): "
    r"canary (?P<canary_s>\d+)/(?P<canary_n>\d+) succeeded \((?P<canary_rate>[\d.]+)\) vs "
    r"stable (?P<stable_s>\d+)/(?P<stable_n>\d+) succeeded \((?P<stable_rate>[\d.]+)\); "
    r"margin (?P<margin>[\d.]+) at 95% confidence: z=(?P<z>[\d.-]+), p=(?P<p>[\d.]+)"
)


async def test_a_worse_canary_is_rolled_back_end_to_end(router: Harness) -> None:
    tenant = await router.tenant()
    version = f"it-canary-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(router.admin_url)
    try:
        await admin.execute(
            "INSERT INTO app.policy_versions (version, artifact_uri, metrics, status, "
            "canary_percent, canary_tenants) VALUES ($1, $2, $3, 'CANARY', 10, $4)",
            version, SHIPPED_MODEL.as_uri(), json.dumps({"misroute_rate": 0.02}), [tenant],
        )  # fmt: skip
        await router.app.registry.refresh()
        counts = {"canary": 0, "stable": 0}
        for i in range(3000):
            if min(counts.values()) >= 25 or router.app.registry.attempts:
                break
            request = pb.DecideRequest(query=f"Where is my order #{10000 + i}?", tenant_id=tenant)
            decision = await router.stub.Decide(request, timeout=5, metadata=as_tenant(tenant))
            arm = "canary" if decision.policy_version == version else "stable"
            counts[arm] += 1
            # The canary's answers fail, the stable version's succeed.
            feedback = pb.FeedbackRequest(
                request_id=f"fb-{i}", decision_id=decision.decision_id, tenant_id=tenant,
                tier=decision.tier, success=arm == "stable", validators_passed=True,
            )  # fmt: skip
            await router.stub.Feedback(feedback, timeout=5, metadata=as_tenant(tenant))
        await router.app.router.drain()
        assert counts["canary"] >= 20
        # Roughly the canary's 10 % share of traffic.
        assert counts["canary"] < counts["stable"]
        attempts = [a for a in router.app.registry.attempts if a.version == version]
        assert len(attempts) == 1
        attempt = attempts[0]
        assert attempt.tenant == tenant
        assert attempt.called
        assert attempt.ok, attempt.error
        status = await admin.fetchval(
            "SELECT status FROM app.policy_versions WHERE version = $1", version
        )
        assert status == "RETIRED"
        # The control plane audited the rollback with the router's reason.
        audits = await admin.fetch(
            "SELECT actor, action, metadata::text AS metadata FROM app.platform_audit_logs "
            "WHERE resource = $1",
            f"policyVersions/{version}",
        )
        assert len(audits) == 1
        audit = audits[0]
        assert audit["action"] == "supportmesh.control.v1.ControlService/UpdatePolicyVersion"
        assert audit["actor"] == "platform:admin"
        metadata = json.loads(audit["metadata"])
        assert (metadata["status"], metadata["update_mask"]) == ("RETIRED", "status")
        assert metadata["reason"] == attempt.reason
        found = REASON.fullmatch(metadata["reason"])
        assert found is not None, metadata["reason"]
        assert (found["version"], found["tenant"]) == (version, tenant)
        # Every canary answer failed and every stable one succeeded, and the verdict came
        # once both arms had the configured minimum of outcomes.
        canary_n, stable_n = int(found["canary_n"]), int(found["stable_n"])
        minimum = router.app.settings.canary_min_samples
        assert minimum <= canary_n <= counts["canary"]
        assert minimum <= stable_n <= counts["stable"]
        assert (int(found["canary_s"]), int(found["stable_s"])) == (0, stable_n)
        assert (found["canary_rate"], found["stable_rate"]) == ("0.000", "1.000")
        assert float(found["margin"]) == router.app.settings.canary_margin
        assert float(found["p"]) < 1 - router.app.settings.canary_confidence
        assert router.metric("router_canary_rollbacks_total", {"version": version}) == 1
        # Retired here at once: no further decision for the tenant uses the canary.
        for i in range(200):
            request = pb.DecideRequest(query=f"Track parcel 1Z{10**7 + i}", tenant_id=tenant)
            decision = await router.stub.Decide(request, timeout=5, metadata=as_tenant(tenant))
            assert decision.policy_version != version
    finally:
        await admin.execute("DELETE FROM app.policy_versions WHERE version = $1", version)
        await admin.close()
