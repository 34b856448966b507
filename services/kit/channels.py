"""Outbound gRPC channels with retries, a default deadline and the kit's client interceptor."""

from __future__ import annotations

import json

import grpc

from services.kit.interceptors import client_interceptors
from services.kit.server import grpc_options
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry


def service_config(max_attempts: int = 3) -> str:
    """A gRPC service config: retries of UNAVAILABLE with backoff.

    Only UNAVAILABLE is retried transparently: the call never reached a handler or the server
    is draining, so a retry cannot repeat a side effect. Mutations that may be retried at the
    application level carry a ``request_id`` instead. The default deadline is not set here
    (see :class:`~services.kit.interceptors.ClientInterceptor`).
    """
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def create_channel(
    target: str,
    settings: ServiceSettings,
    telemetry: Telemetry,
    *,
    default_timeout_s: float = 5.0,
) -> grpc.aio.Channel:
    """Open an insecure channel (mTLS is the mesh's job) to ``target`` such as ``host:port``.

    Calls that set no timeout get ``default_timeout_s``; one that sets its own keeps it, and
    either way an outbound call never outlives the inbound call it serves.
    """
    options: list[tuple[str, int | str]] = [*grpc_options(settings)]
    options.append(("grpc.service_config", service_config()))
    options.append(("grpc.enable_retries", 1))
    return grpc.aio.insecure_channel(
        target,
        options=options,
        interceptors=client_interceptors(telemetry, default_timeout_s),  # type: ignore[arg-type]
    )
