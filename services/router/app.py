"""Composition root of the router service."""

from __future__ import annotations

import grpc
from pydantic_settings import SettingsConfigDict

from services.kit.server import Register
from services.kit.settings import ServiceSettings
from services.router.servicer import RouterServicer
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc

SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["RouterService"].full_name,)


class RouterSettings(ServiceSettings):
    """Router settings, read from ``ROUTER_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="ROUTER_", frozen=True, extra="ignore")

    service_name: str = "router"


def build(settings: RouterSettings) -> tuple[list[str], Register]:
    """Wire the router's servicer; returns the service names and a registration callback."""

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_RouterServiceServicer_to_server(RouterServicer(), server)

    return list(SERVICE_NAMES), register
