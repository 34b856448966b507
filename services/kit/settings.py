"""Typed settings shared by every service; the only place that reads the environment.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (``ROUTER_``,
``CONTROL_`` …). Infrastructure URLs are read without a prefix (``DATABASE_URL`` …) so one
environment configures every process of a deployment.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InfraSettings(BaseSettings):
    """Addresses of the platform's shared servers; empty means "not configured"."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    database_url: str = Field("", description="PostgreSQL URL the services connect with.")
    migration_database_url: str = Field(
        "", description="PostgreSQL URL of a role allowed to run migrations (the owner's)."
    )
    redis_url: str = Field("", description="Valkey/Redis URL for limits, sessions and caches.")
    nats_url: str = Field("", description="NATS URL with JetStream enabled.")
    qdrant_url: str = Field("", description="Qdrant server URL; empty selects local mode.")


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has; subclasses add their own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    service_name: str = Field("service", description="Name used in logs, metrics and traces.")
    host: str = Field("127.0.0.1", description="Interface the gRPC server binds to.")
    port: int = Field(0, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int = Field(0, description="Prometheus /metrics port; 0 disables it.")
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="Emit one JSON object per log line.")
    max_message_bytes: int = Field(
        4 * 1024 * 1024, description="Largest gRPC message accepted or sent (4 MiB)."
    )
    keepalive_time_ms: int = Field(
        30_000, description="Interval between keepalive pings on idle connections."
    )
    keepalive_timeout_ms: int = Field(10_000, description="How long to wait for a ping ack.")
    shutdown_grace_s: float = Field(
        5.0, description="Time in-flight calls get to finish after SIGTERM."
    )
    require_deadline: bool = Field(True, description="Refuse inbound calls that carry no deadline.")
    max_concurrent_rpcs: int = Field(
        1000, description="Calls served at once before new ones are refused (RESOURCE_EXHAUSTED)."
    )
    infra: InfraSettings = Field(
        default_factory=InfraSettings, description="Shared server addresses."
    )
