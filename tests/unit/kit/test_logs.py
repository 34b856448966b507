import io
import json
import logging

import pytest

from services.kit import context, logs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+x@example.co.uk now", "mail [EMAIL] now"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("call +44 20 7946 0958 today", "call [PHONE] today"),
        ("call (555) 123-4567", "call [PHONE]"),
        ("order 12345 shipped", "order 12345 shipped"),
        ("version 1.2.3 released", "version 1.2.3 released"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_non_luhn_digit_runs_are_not_called_cards() -> None:
    assert "[CARD]" not in logs.redact("ref 4111 1111 1111 1112")


def test_json_formatter_redacts_message_and_extras_and_adds_call_context() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("svc"))
    logger = logging.getLogger("test.logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    token = context.bind(context.CallContext(request_id="r-1", method="/x/Y", tenant_id="t-1"))
    try:
        logger.warning("customer %s wrote", "bob@example.com", extra={"phone": "+1 415 555 2671"})
    finally:
        context.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["msg"] == "customer [EMAIL] wrote"
    assert line["phone"] == "[PHONE]"
    assert (line["service"], line["request_id"], line["tenant_id"]) == ("svc", "r-1", "t-1")
    assert line["level"] == "WARNING"
