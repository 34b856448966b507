"""Run the edge service, or manage its signing keys.

``python -m services.edge`` serves. ``python -m services.edge rotate-key`` makes a new key
the signer (older keys retire after ``--retire-previous-after`` seconds, by default the
longest token lifetime plus a minute, so no issued token is cut short);
``python -m services.edge retire-key KID`` stops accepting one key's tokens now.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import timedelta

from services.edge.app import EdgeSettings, build
from services.edge.signing import KeyStore
from services.kit import db
from services.kit.server import run_app


async def _manage(settings: EdgeSettings, args: argparse.Namespace) -> int:
    engine = db.create_engine(settings.infra.database_url, pool_size=1)
    store = KeyStore(engine, bits=settings.signing_key_bits)
    try:
        if args.command == "rotate-key":
            delay = args.retire_previous_after
            kid = await store.rotate(None if delay < 0 else timedelta(seconds=delay))
            print(f"signing with {kid}")
            return 0
        if await store.retire(args.kid):
            print(f"retired {args.kid}")
            return 0
        print(f"no signing key {args.kid}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


def _kid_as_operand(argv: list[str]) -> list[str]:
    """Mark a key id as an operand, not an option.

    A kid is a base64url thumbprint, and one in 64 of them starts with ``-``.
    """
    if (
        len(argv) >= 2
        and argv[0] == "retire-key"
        and argv[1].startswith("-")
        and argv[1] not in ("-h", "--help", "--")
    ):
        return [argv[0], "--", *argv[1:]]
    return argv


def parse(argv: Sequence[str], settings: EdgeSettings) -> argparse.Namespace:
    """The command line's command and its arguments."""
    parser = argparse.ArgumentParser(prog="python -m services.edge")
    commands = parser.add_subparsers(dest="command")
    rotate = commands.add_parser("rotate-key", help="make a new key the signer")
    rotate.add_argument(
        "--retire-previous-after",
        type=float,
        default=settings.token_max_ttl_s + 60,
        help="seconds until older keys retire; negative: leave them unretired",
    )
    retire = commands.add_parser("retire-key", help="stop accepting a key's tokens now")
    retire.add_argument("kid")
    return parser.parse_args(_kid_as_operand(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Serve, or run a key management command."""
    settings = EdgeSettings()
    args = parse(sys.argv[1:] if argv is None else argv, settings)
    if args.command is None:
        run_app(settings, lambda telemetry: build(settings, telemetry))
        return 0
    return asyncio.run(_manage(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
