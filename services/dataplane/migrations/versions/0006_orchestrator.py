"""Orchestrator: run leases, the transactional outbox and LangGraph's checkpoint tables.

- ``app.agent_runs`` gains the chat/session columns and a lease (``lease_owner``,
  ``lease_until``) renewed by the orchestrator that runs it; a run whose lease lapsed is
  picked up by the recovery loop of any orchestrator.
- ``app.event_outbox`` holds events written in the same transaction as the run-state
  change; a relay publishes them to JetStream with ``Nats-Msg-Id`` = ``event_id`` and marks
  them sent. It is a platform-internal queue with no tenant column (the tenant is inside
  each event) and no tenant API reads it.
- ``checkpoints.*``: langgraph-checkpoint-postgres's tables, created here by the owner role
  (the services get no DDL). They carry no tenant column: the thread id is
  ``{tenant}:{run}``, and only the orchestrator's engine reads them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op
from langgraph.checkpoint.postgres.base import MIGRATIONS

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RUN_COLUMNS = """
ALTER TABLE app.agent_runs
  ADD COLUMN session_id  text NOT NULL DEFAULT '',
  ADD COLUMN user_id     text NOT NULL DEFAULT '',
  ADD COLUMN decision_id text NOT NULL DEFAULT '',
  ADD COLUMN lease_owner text NOT NULL DEFAULT '',
  ADD COLUMN lease_until timestamptz,
  ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now()
"""

OUTBOX = """
CREATE TABLE app.event_outbox (
  seq        bigserial PRIMARY KEY,
  event_id   text NOT NULL UNIQUE,
  subject    text NOT NULL,
  payload    bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  sent_at    timestamptz
)
"""

# Which runs lost their orchestrator, across tenants: ids only, for the recovery loop. It
# bypasses RLS on purpose, so it belongs to the BYPASSRLS lookup role (as the auth lookups).
EXPIRED = """
CREATE FUNCTION app.orchestrator_expired_runs(lim integer)
RETURNS TABLE (tenant_id text, run_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = app, pg_temp AS $$
  SELECT r.tenant_id, r.run_id FROM app.agent_runs r
  WHERE r.lease_until IS NOT NULL AND r.lease_until < now()
  ORDER BY r.lease_until LIMIT lim
$$
"""


def upgrade() -> None:
    """Add the lease columns, the outbox and the checkpoint schema, as the owner role."""
    op.execute("CREATE SCHEMA IF NOT EXISTS checkpoints AUTHORIZATION supportmesh_owner")
    op.execute("SET LOCAL ROLE supportmesh_owner")
    op.execute(RUN_COLUMNS)
    op.execute("CREATE INDEX agent_runs_lease ON app.agent_runs (lease_until)")
    op.execute("CREATE INDEX agent_runs_tenant_session ON app.agent_runs (tenant_id, session_id)")
    op.execute(OUTBOX)
    op.execute("CREATE INDEX event_outbox_unsent ON app.event_outbox (seq) WHERE sent_at IS NULL")
    op.execute("SET LOCAL search_path TO checkpoints")
    for version, statement in enumerate(MIGRATIONS):
        # CONCURRENTLY cannot run in a migration's transaction; the tables are empty anyway.
        op.execute(statement.replace("CONCURRENTLY ", ""))
        if version:
            op.execute(f"INSERT INTO checkpoint_migrations (v) VALUES ({version:d})")  # noqa: S608
    op.execute("INSERT INTO checkpoint_migrations (v) VALUES (0) ON CONFLICT DO NOTHING")
    op.execute("SET LOCAL search_path TO DEFAULT")
    op.execute("GRANT USAGE ON SCHEMA checkpoints TO supportmesh_app")
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA checkpoints "
        "TO supportmesh_app"
    )
    op.execute("RESET ROLE")
    op.execute("GRANT SELECT ON app.agent_runs TO supportmesh_auth")
    op.execute("GRANT CREATE ON SCHEMA app TO supportmesh_auth")
    op.execute("SET LOCAL ROLE supportmesh_auth")
    op.execute(EXPIRED)
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA app FROM supportmesh_auth")
    op.execute("REVOKE ALL ON FUNCTION app.orchestrator_expired_runs(integer) FROM PUBLIC")
    op.execute(
        "GRANT EXECUTE ON FUNCTION app.orchestrator_expired_runs(integer) TO supportmesh_app"
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.execute("DROP FUNCTION IF EXISTS app.orchestrator_expired_runs(integer)")
    op.execute("DROP SCHEMA IF EXISTS checkpoints CASCADE")
    op.execute("DROP TABLE IF EXISTS app.event_outbox")
    for column in ("session_id", "user_id", "decision_id", "lease_owner", "lease_until"):
        op.execute(f"ALTER TABLE app.agent_runs DROP COLUMN IF EXISTS {column}")
    op.execute("ALTER TABLE app.agent_runs DROP COLUMN IF EXISTS updated_at")
