"""Audit log for platform-wide changes (policy versions, platform degrade switches).

Those resources belong to no tenant, so their audit rows cannot live in the tenant-scoped
``audit_logs``; this table has no ``tenant_id`` and is written by the control plane only.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``app.platform_audit_logs`` as the owner role."""
    op.execute("SET LOCAL ROLE supportmesh_owner")
    op.execute(
        """
        CREATE TABLE app.platform_audit_logs (
          log_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          actor       text NOT NULL,
          action      text NOT NULL,
          resource    text NOT NULL,
          request_id  text NOT NULL DEFAULT '',
          metadata    jsonb NOT NULL DEFAULT '{}',
          created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX platform_audit_logs_created ON app.platform_audit_logs (created_at)")
    # Append-only for the services: no UPDATE or DELETE grant.
    op.execute("REVOKE UPDATE, DELETE ON app.platform_audit_logs FROM supportmesh_app")
    op.execute("RESET ROLE")


def downgrade() -> None:
    """Drop the table."""
    op.execute("DROP TABLE IF EXISTS app.platform_audit_logs")
