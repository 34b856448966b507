"""Orders: a tenant's orders, written by the orchestrator's order tools.

Same pattern as the tenancy tables: created by the NOLOGIN owner role, ENABLE + FORCE ROW
LEVEL SECURITY, one ``tenant_isolation`` policy on ``app.current_tenant()``, and a
``(tenant_id, created_at)`` index. ``request_id`` is the creating call's idempotency key
(unique per tenant) and ``request_fingerprint`` a hash of its input, so a replay returns the
same order and a reused key with another input is refused. Columns with CHECK constraints
have defaults, so generic row inserts (the RLS coverage test) stay valid.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = """
CREATE TABLE app.orders (
  order_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id           text NOT NULL REFERENCES app.tenants (tenant_id),
  reference           text,
  customer_id         text NOT NULL,
  customer_email      text NOT NULL DEFAULT '',
  items               jsonb NOT NULL DEFAULT '[]',
  total_cents         bigint NOT NULL DEFAULT 0 CHECK (total_cents >= 0),
  currency            text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
  status              text NOT NULL DEFAULT 'CREATED'
                      CHECK (status IN ('CREATED', 'PAID', 'SHIPPED', 'DELIVERED', 'CANCELLED')),
  cancel_reason       text NOT NULL DEFAULT '',
  request_id          text,
  request_fingerprint text NOT NULL DEFAULT '',
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  cancelled_at        timestamptz,
  UNIQUE (tenant_id, request_id),
  UNIQUE (tenant_id, reference)
)
"""


def upgrade() -> None:
    """Create ``app.orders`` as the owner, under forced row-level security."""
    op.execute("SET LOCAL ROLE supportmesh_owner")
    op.execute(TABLE)
    op.execute("ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE app.orders FORCE ROW LEVEL SECURITY")
    visible = "tenant_id = (SELECT app.current_tenant())"
    op.execute(
        f"CREATE POLICY tenant_isolation ON app.orders USING ({visible}) WITH CHECK ({visible})"
    )
    op.execute("CREATE INDEX orders_tenant_created ON app.orders (tenant_id, created_at)")
    # Orders are cancelled, never deleted: the services get no DELETE.
    op.execute("REVOKE DELETE ON app.orders FROM supportmesh_app")
    op.execute("RESET ROLE")


def downgrade() -> None:
    """Drop the table."""
    op.execute("DROP TABLE IF EXISTS app.orders")
