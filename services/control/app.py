"""Composition root of the control plane service."""

from __future__ import annotations

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.control.servicer import ControlServicer, Repositories
from services.kit import db
from services.kit.server import Register
from services.kit.settings import ServiceSettings
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import control_service_pb2_grpc as pb_grpc

SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["ControlService"].full_name,)


class ControlSettings(ServiceSettings):
    """Control plane settings, read from ``CONTROL_*`` variables (``DATABASE_URL`` unprefixed)."""

    model_config = SettingsConfigDict(env_prefix="CONTROL_", frozen=True, extra="ignore")

    service_name: str = "control"
    db_pool_size: int = Field(10, description="Connections kept open to PostgreSQL.")
    db_max_overflow: int = Field(10, description="Extra connections allowed under load.")


def build(settings: ControlSettings) -> tuple[list[str], Register]:
    """Wire the servicer over one database engine; returns service names and a registrar."""
    if not settings.infra.database_url:
        raise RuntimeError("the control plane needs DATABASE_URL")
    engine = db.create_engine(
        settings.infra.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    servicer = ControlServicer(Repositories.over(engine))

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_ControlServiceServicer_to_server(servicer, server)

    return list(SERVICE_NAMES), register
