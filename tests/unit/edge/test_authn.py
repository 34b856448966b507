"""Finding the one credential in request headers."""

from __future__ import annotations

import pytest

from services.edge.authn import CredentialKind, presented
from services.kit import errors

KEY = "smk_" + "a" * 16 + "_" + "b" * 43


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer abc.def.ghi"}, ("abc.def.ghi", CredentialKind.JWT)),
        ({"authorization": "bearer abc.def.ghi"}, ("abc.def.ghi", CredentialKind.JWT)),
        ({"authorization": f"Bearer {KEY}"}, (KEY, CredentialKind.API_KEY)),
        ({"x-api-key": KEY}, (KEY, CredentialKind.API_KEY)),
    ],
)
def test_presented(headers: dict[str, str], expected: tuple[str, CredentialKind]) -> None:
    assert presented(headers) == expected


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "CREDENTIALS_MISSING"),
        ({"authorization": "Bearer"}, "CREDENTIALS_MISSING"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "CREDENTIALS_INVALID"),
        ({"authorization": "Bearer x", "x-api-key": KEY}, "CREDENTIALS_INVALID"),
    ],
)
def test_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(errors.Unauthenticated) as caught:
        presented(headers)
    assert errors.reason_name(caught.value.reason) == reason
