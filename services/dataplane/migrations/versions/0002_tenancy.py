"""Tenancy schema: the seed's tables with forced row-level security on every tenant table.

Tables are created by the NOLOGIN owner role, so the services' role is never their owner.
Each tenant table gets ENABLE + FORCE ROW LEVEL SECURITY and one policy comparing
``tenant_id`` with the transaction's ``app.tenant_id`` setting (set with ``set_config(…,
true)``, so it ends with the transaction). With no tenant set the policy matches no row.

Two narrow exits exist, both functions rather than policies the services could misuse:
``app.auth_lookup_api_key`` (SECURITY DEFINER, owned by a BYPASSRLS role) lets the edge
resolve an API key to its tenant before any tenant is known; and the ``tenants`` policy also
admits the platform operator when ``app.platform_admin`` is set for the transaction.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TENANT_TABLES = (
    "tenants", "users", "customers", "api_keys", "usage_counters", "agent_runs",
    "workflow_executions", "audit_logs", "feature_flags", "degrade_switches", "tools",
    "agents", "workflow_overrides",
)  # fmt: skip

SCHEMA = """
CREATE FUNCTION app.current_tenant() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS
  $$ SELECT nullif(current_setting('app.tenant_id', true), '') $$;
CREATE FUNCTION app.is_platform_admin() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS
  $$ SELECT coalesce(current_setting('app.platform_admin', true), '') = 'on' $$;

CREATE TABLE app.plans (
  plan_id      text PRIMARY KEY,
  display_name text NOT NULL,
  description  text NOT NULL DEFAULT '',
  limits       jsonb NOT NULL,
  pricing      jsonb NOT NULL,
  features     text[] NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.tenants (
  tenant_id    text PRIMARY KEY CHECK (tenant_id ~ '^[a-z][a-z0-9-]{2,62}$'),
  display_name text NOT NULL,
  plan_id      text NOT NULL REFERENCES app.plans (plan_id),
  state        text NOT NULL DEFAULT 'ACTIVE' CHECK (state IN ('ACTIVE', 'SUSPENDED')),
  data_region  text NOT NULL DEFAULT '',
  config       jsonb NOT NULL DEFAULT '{}',
  request_id   text,
  version      integer NOT NULL DEFAULT 1,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (request_id)
);

CREATE TABLE app.users (
  user_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES app.tenants (tenant_id),
  email        text NOT NULL,
  display_name text NOT NULL DEFAULT '',
  role         text NOT NULL CHECK (role IN ('ADMIN', 'AGENT', 'VIEWER')),
  is_active    boolean NOT NULL DEFAULT true,
  request_id   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, email),
  UNIQUE (tenant_id, request_id)
);

CREATE TABLE app.customers (
  customer_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES app.tenants (tenant_id),
  name         text NOT NULL,
  email        text,
  phone        text,
  metadata     jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.api_keys (
  key_id              text PRIMARY KEY,
  tenant_id           text NOT NULL REFERENCES app.tenants (tenant_id),
  display_name        text NOT NULL DEFAULT '',
  prefix              text NOT NULL,
  secret_hash         bytea NOT NULL,
  scopes              text[] NOT NULL,
  user_id             uuid REFERENCES app.users (user_id),
  requests_per_minute integer NOT NULL DEFAULT 0,
  request_id          text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  expires_at          timestamptz,
  revoked_at          timestamptz,
  last_used_at        timestamptz,
  UNIQUE (tenant_id, request_id)
);

CREATE TABLE app.usage_counters (
  tenant_id    text NOT NULL REFERENCES app.tenants (tenant_id),
  meter        text NOT NULL,
  window_start timestamptz NOT NULL,
  count        numeric NOT NULL DEFAULT 0,
  reset_at     timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, meter, window_start)
);

CREATE TABLE app.agent_runs (
  run_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        text NOT NULL REFERENCES app.tenants (tenant_id),
  workflow         text NOT NULL,
  workflow_version text NOT NULL DEFAULT '',
  status           text NOT NULL,
  input_data       jsonb NOT NULL DEFAULT '{}',
  output_data      jsonb NOT NULL DEFAULT '{}',
  metrics          jsonb NOT NULL DEFAULT '{}',
  request_id       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  completed_at     timestamptz,
  UNIQUE (tenant_id, request_id)
);

CREATE TABLE app.workflow_executions (
  execution_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES app.tenants (tenant_id),
  run_id       uuid NOT NULL REFERENCES app.agent_runs (run_id),
  steps        jsonb NOT NULL DEFAULT '[]',
  compensation jsonb NOT NULL DEFAULT '[]',
  status       text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.audit_logs (
  log_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   text NOT NULL REFERENCES app.tenants (tenant_id),
  actor       text NOT NULL,
  action      text NOT NULL,
  resource    text NOT NULL,
  request_id  text NOT NULL DEFAULT '',
  status_code integer NOT NULL DEFAULT 0,
  metadata    jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.feature_flags (
  tenant_id  text NOT NULL REFERENCES app.tenants (tenant_id),
  flag       text NOT NULL,
  enabled    boolean NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, flag)
);

CREATE TABLE app.degrade_switches (
  tenant_id        text PRIMARY KEY REFERENCES app.tenants (tenant_id),
  prefer_slm_tiers boolean NOT NULL DEFAULT false,
  shrink_context   boolean NOT NULL DEFAULT false,
  disable_critique boolean NOT NULL DEFAULT false,
  reason           text NOT NULL DEFAULT '',
  version          integer NOT NULL DEFAULT 1,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Platform-wide switches: one row, no tenant, so no row-level security.
CREATE TABLE app.platform_degrade_switches (
  singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  prefer_slm_tiers boolean NOT NULL DEFAULT false,
  shrink_context   boolean NOT NULL DEFAULT false,
  disable_critique boolean NOT NULL DEFAULT false,
  reason           text NOT NULL DEFAULT '',
  version          integer NOT NULL DEFAULT 1,
  updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO app.platform_degrade_switches DEFAULT VALUES;

CREATE TABLE app.tools (
  tenant_id  text NOT NULL REFERENCES app.tenants (tenant_id),
  name       text NOT NULL,
  version    text NOT NULL,
  spec       jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE app.agents (
  tenant_id  text NOT NULL REFERENCES app.tenants (tenant_id),
  name       text NOT NULL,
  version    text NOT NULL,
  manifest   jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE app.workflow_overrides (
  tenant_id  text NOT NULL REFERENCES app.tenants (tenant_id),
  workflow   text NOT NULL,
  version    text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, workflow)
);

-- Router policy versions are platform-wide; canaries name the tenants they apply to.
CREATE TABLE app.policy_versions (
  version        text PRIMARY KEY,
  artifact_uri   text NOT NULL,
  metrics        jsonb NOT NULL DEFAULT '{}',
  status         text NOT NULL CHECK (status IN ('STABLE', 'CANARY', 'RETIRED')),
  canary_percent integer NOT NULL DEFAULT 0 CHECK (canary_percent BETWEEN 0 AND 100),
  canary_tenants text[] NOT NULL DEFAULT '{}',
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

-- JWT signing keys (RS256). Platform-wide; old keys verify until retired_at.
CREATE TABLE app.signing_keys (
  kid         text PRIMARY KEY,
  private_pem text NOT NULL,
  public_jwk  jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  activated_at timestamptz NOT NULL DEFAULT now(),
  retired_at  timestamptz
);
"""

SEED_PLANS = """
INSERT INTO app.plans (plan_id, display_name, description, limits, pricing, features) VALUES
 ('free', 'Free', 'Try the platform.',
  '{"requestsPerMinute": 60, "tokensPerMonth": "200000", "costPerMonthUsd": 5,
    "allowedTiers": ["SLM_A", "SLM_B"], "allowedTools": [], "maxConnections": 20}',
  '{"monthlyFeeUsd": 0, "pricePerThousandRequestsUsd": 0, "pricePerMillionTokensUsd": 0}',
  '{faq}'),
 ('pro', 'Pro', 'For growing support teams.',
  '{"requestsPerMinute": 600, "tokensPerMonth": "20000000", "costPerMonthUsd": 500,
    "allowedTiers": ["SLM_A", "SLM_B", "LLM"], "allowedTools": [], "maxConnections": 500}',
  '{"monthlyFeeUsd": 99, "pricePerThousandRequestsUsd": 0.5, "pricePerMillionTokensUsd": 2}',
  '{faq,orders,payments,leads,tracking}'),
 ('enterprise', 'Enterprise', 'High volume with every tier.',
  '{"requestsPerMinute": 6000, "tokensPerMonth": "500000000", "costPerMonthUsd": 20000,
    "allowedTiers": ["SLM_A", "SLM_B", "LLM"], "allowedTools": [], "maxConnections": 5000}',
  '{"monthlyFeeUsd": 999, "pricePerThousandRequestsUsd": 0.3, "pricePerMillionTokensUsd": 1.5}',
  '{faq,orders,payments,leads,tracking,sso}');
"""

AUTH_LOOKUP = """
CREATE FUNCTION app.auth_lookup_api_key(p_key_id text)
RETURNS TABLE (
  key_id text, tenant_id text, secret_hash bytea, scopes text[], user_role text,
  requests_per_minute integer, expires_at timestamptz, revoked_at timestamptz,
  tenant_state text, plan_id text, plan_limits jsonb
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = app, pg_temp AS $$
  SELECT k.key_id, k.tenant_id, k.secret_hash, k.scopes, u.role, k.requests_per_minute,
         k.expires_at, k.revoked_at, t.state, t.plan_id, p.limits
  FROM app.api_keys k
  JOIN app.tenants t ON t.tenant_id = k.tenant_id
  JOIN app.plans p ON p.plan_id = t.plan_id
  LEFT JOIN app.users u ON u.user_id = k.user_id
  WHERE k.key_id = p_key_id
$$;

CREATE FUNCTION app.auth_tenant_limits(p_tenant_id text)
RETURNS TABLE (tenant_state text, plan_id text, plan_limits jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = app, pg_temp AS $$
  SELECT t.state, t.plan_id, p.limits
  FROM app.tenants t JOIN app.plans p ON p.plan_id = t.plan_id
  WHERE t.tenant_id = p_tenant_id
$$;
"""


def _script(sql: str) -> None:
    """Run a multi-statement script one statement at a time (asyncpg prepares each)."""
    statement: list[str] = []
    quoted = False
    for line in sql.splitlines():
        if line.strip().startswith("--") and not quoted:
            continue
        statement.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if line.rstrip().endswith(";") and not quoted:
            op.execute("\n".join(statement))
            statement = []
    if "".join(statement).strip():
        op.execute("\n".join(statement))


def upgrade() -> None:
    """Create the tables as the owner, then the policies and the auth lookup functions."""
    op.execute("SET LOCAL ROLE supportmesh_owner")
    _script(SCHEMA)
    _script(SEED_PLANS)
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE app.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE app.{table} FORCE ROW LEVEL SECURITY")
        visible = "tenant_id = (SELECT app.current_tenant())"
        if table == "tenants":
            visible = f"({visible} OR (SELECT app.is_platform_admin()))"
        op.execute(
            f"CREATE POLICY tenant_isolation ON app.{table} USING ({visible}) "
            f"WITH CHECK ({visible})"
        )
        op.execute(f"CREATE INDEX {table}_tenant_created ON app.{table} (tenant_id, created_at)")
    op.execute("RESET ROLE")
    # The lookup functions bypass RLS on purpose and so belong to a BYPASSRLS role that
    # cannot log in; only superusers may create such a role.
    op.execute(
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supportmesh_auth') THEN
            CREATE ROLE supportmesh_auth NOLOGIN BYPASSRLS;
          END IF;
        END $$;
        """
    )
    op.execute("GRANT USAGE ON SCHEMA app TO supportmesh_auth")
    op.execute(
        "GRANT SELECT ON app.api_keys, app.tenants, app.plans, app.users TO supportmesh_auth"
    )
    op.execute("GRANT CREATE ON SCHEMA app TO supportmesh_auth")
    op.execute("SET LOCAL ROLE supportmesh_auth")
    _script(AUTH_LOOKUP)
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA app FROM supportmesh_auth")
    op.execute("REVOKE ALL ON FUNCTION app.auth_lookup_api_key(text) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION app.auth_tenant_limits(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION app.auth_lookup_api_key(text) TO supportmesh_app")
    op.execute("GRANT EXECUTE ON FUNCTION app.auth_tenant_limits(text) TO supportmesh_app")


def downgrade() -> None:
    """Drop the tenancy schema objects."""
    op.execute("DROP FUNCTION IF EXISTS app.auth_lookup_api_key(text)")
    op.execute("DROP FUNCTION IF EXISTS app.auth_tenant_limits(text)")
    for table in (*reversed(TENANT_TABLES), "platform_degrade_switches", "policy_versions",
                  "signing_keys", "plans"):  # fmt: skip
        op.execute(f"DROP TABLE IF EXISTS app.{table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS app.current_tenant()")
    op.execute("DROP FUNCTION IF EXISTS app.is_platform_admin()")
