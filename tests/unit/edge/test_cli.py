"""The edge's key management command line."""

from __future__ import annotations

import pytest

from services.edge.__main__ import parse
from services.edge.app import EdgeSettings

# A real thumbprint shape: 43 base64url characters, and this one starts with "-".
DASHED_KID = "-PqDf_HgVbPNDjvE_d-kg3dQbyT9mjBuDR2TgcLRATM"


@pytest.fixture
def settings() -> EdgeSettings:
    return EdgeSettings()


@pytest.mark.parametrize("kid", [DASHED_KID, "PqDf_HgVbPNDjvE_d-kg3dQbyT9mjBuDR2TgcLRATM"])
def test_retire_key_takes_any_thumbprint(settings: EdgeSettings, kid: str) -> None:
    args = parse(["retire-key", kid], settings)
    assert (args.command, args.kid) == ("retire-key", kid)


def test_retire_key_still_takes_an_explicit_separator(settings: EdgeSettings) -> None:
    assert parse(["retire-key", "--", DASHED_KID], settings).kid == DASHED_KID


def test_retire_key_help_is_still_help(
    settings: EdgeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["retire-key", "--help"], settings)
    assert exited.value.code == 0
    assert "kid" in capsys.readouterr().out


def test_retire_key_without_a_kid_is_refused(settings: EdgeSettings) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["retire-key"], settings)
    assert exited.value.code == 2


def test_no_command_serves(settings: EdgeSettings) -> None:
    assert parse([], settings).command is None
