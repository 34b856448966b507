"""Roles: a NOLOGIN owner of every table and the login role the services use.

The services' role is neither superuser, table owner nor BYPASSRLS, so row-level security
policies always apply to it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the roles and the default privileges."""
    op.execute(
        """
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supportmesh_owner') THEN
            CREATE ROLE supportmesh_owner NOLOGIN;
          END IF;
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supportmesh_app') THEN
            CREATE ROLE supportmesh_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
        END $$;
        """
    )
    op.execute("CREATE SCHEMA IF NOT EXISTS app AUTHORIZATION supportmesh_owner")
    op.execute("GRANT USAGE ON SCHEMA app TO supportmesh_app")
    op.execute(
        "ALTER DEFAULT PRIVILEGES FOR ROLE supportmesh_owner IN SCHEMA app "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO supportmesh_app"
    )
    op.execute(
        "ALTER DEFAULT PRIVILEGES FOR ROLE supportmesh_owner IN SCHEMA app "
        "GRANT USAGE, SELECT ON SEQUENCES TO supportmesh_app"
    )
    op.execute("ALTER ROLE supportmesh_app SET search_path = app, public")


def downgrade() -> None:
    """Drop the schema; roles are cluster-wide and left in place."""
    op.execute("DROP SCHEMA IF EXISTS app CASCADE")
