"""Knowledge: documents, ingest idempotency keys and per-tenant search settings, under forced RLS.

A document row keeps the submitted bytes (bounded by the service's size limit) so a worker can
(re)index it at any time: after a crash, a model change or a lost local index. ``revision``
grows with every changed submission; a work item names the revision it indexes, so a stale
one is skipped. ``index_generation`` says which index build holds the document's vectors.

One narrow exit, like the edge's key lookup: ``app.knowledge_pending_documents`` (SECURITY
DEFINER, owned by the BYPASSRLS ``supportmesh_auth`` role) lists only ids — documents waiting
too long for a worker, and (given a generation) documents indexed into another index
generation — so the service can queue them again without reading any tenant's content.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TENANT_TABLES = ("knowledge_documents", "knowledge_requests", "knowledge_settings")

SCHEMA = (
    """
    CREATE TABLE app.knowledge_documents (
      document_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      tenant_id        text NOT NULL REFERENCES app.tenants (tenant_id),
      external_id      text,
      title            text NOT NULL DEFAULT '',
      source_uri       text NOT NULL DEFAULT '',
      media_type       text NOT NULL,
      kind             text NOT NULL DEFAULT 'ARTICLE' CHECK (kind IN ('ARTICLE', 'FAQ')),
      labels           jsonb NOT NULL DEFAULT '{}',
      status           text NOT NULL DEFAULT 'QUEUED'
                       CHECK (status IN ('QUEUED', 'PROCESSING', 'INDEXED', 'FAILED')),
      failure_reason   text NOT NULL DEFAULT '',
      content          bytea NOT NULL,
      size_bytes       bigint NOT NULL DEFAULT 0,
      content_sha256   text NOT NULL,
      fingerprint      text NOT NULL DEFAULT '',
      revision         bigint NOT NULL DEFAULT 1,
      chunk_count      integer NOT NULL DEFAULT 0,
      index_generation text NOT NULL DEFAULT '',
      embedding_model  text NOT NULL DEFAULT '',
      created_at       timestamptz NOT NULL DEFAULT now(),
      updated_at       timestamptz NOT NULL DEFAULT now(),
      indexed_at       timestamptz,
      UNIQUE (tenant_id, external_id)
    )
    """,
    # Content dedup of documents submitted without an external id.
    "CREATE INDEX knowledge_documents_sha ON app.knowledge_documents (tenant_id, content_sha256)",
    "CREATE INDEX knowledge_documents_status ON app.knowledge_documents (status, updated_at)",
    """
    CREATE TABLE app.knowledge_requests (
      tenant_id   text NOT NULL REFERENCES app.tenants (tenant_id),
      request_id  text NOT NULL,
      document_id uuid NOT NULL,
      created_at  timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, request_id)
    )
    """,
    """
    CREATE TABLE app.knowledge_settings (
      tenant_id     text PRIMARY KEY REFERENCES app.tenants (tenant_id),
      faq_threshold real NOT NULL DEFAULT 0,
      created_at    timestamptz NOT NULL DEFAULT now(),
      updated_at    timestamptz NOT NULL DEFAULT now()
    )
    """,
)

PENDING = """
CREATE FUNCTION app.knowledge_pending_documents(
  p_generation text, p_waiting_since timestamptz, p_limit integer
)
RETURNS TABLE (tenant_id text, document_id uuid, revision bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = app, pg_temp AS $$
  SELECT d.tenant_id, d.document_id, d.revision
  FROM app.knowledge_documents d
  WHERE (d.status IN ('QUEUED', 'PROCESSING') AND d.updated_at < p_waiting_since)
     OR (p_generation IS NOT NULL AND d.status = 'INDEXED'
         AND d.index_generation <> p_generation)
  ORDER BY d.updated_at
  LIMIT p_limit
$$
"""


def upgrade() -> None:
    """Create the tables as the owner with forced RLS, then the pending-documents lookup."""
    op.execute("SET LOCAL ROLE supportmesh_owner")
    for statement in SCHEMA:
        op.execute(statement)
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE app.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE app.{table} FORCE ROW LEVEL SECURITY")
        visible = "tenant_id = (SELECT app.current_tenant())"
        op.execute(
            f"CREATE POLICY tenant_isolation ON app.{table} USING ({visible}) "
            f"WITH CHECK ({visible})"
        )
        op.execute(f"CREATE INDEX {table}_tenant_created ON app.{table} (tenant_id, created_at)")
    op.execute("RESET ROLE")
    op.execute(
        "GRANT SELECT (tenant_id, document_id, revision, status, updated_at, index_generation) "
        "ON app.knowledge_documents TO supportmesh_auth"
    )
    op.execute("GRANT CREATE ON SCHEMA app TO supportmesh_auth")
    op.execute("SET LOCAL ROLE supportmesh_auth")
    op.execute(PENDING)
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA app FROM supportmesh_auth")
    signature = "app.knowledge_pending_documents(text, timestamptz, integer)"
    op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO supportmesh_app")


def downgrade() -> None:
    """Drop the knowledge schema objects."""
    op.execute(
        "DROP FUNCTION IF EXISTS app.knowledge_pending_documents(text, timestamptz, integer)"
    )
    for table in reversed(TENANT_TABLES):
        op.execute(f"DROP TABLE IF EXISTS app.{table} CASCADE")
