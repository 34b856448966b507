"""Structured JSON logging with PII redaction (emails, phone numbers, card numbers)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from services.kit import context

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13–19 digits, optionally grouped by spaces or dashes; confirmed by the Luhn check below.
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# International or national numbers with 9–15 digits and common separators.
_PHONE = re.compile(r"(?<![\w.])(?:\+|\()?\d[\d\s().-]{7,}\d(?![\w.])")
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_sub(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[CARD]" if _luhn_ok(digits) else match.group(0)


def _phone_sub(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[PHONE]" if 9 <= len(digits) <= 15 else match.group(0)


def redact(text: str) -> str:
    """Replace emails, Luhn-valid card numbers and phone numbers in ``text``."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub(_card_sub, text)
    return _PHONE.sub(_phone_sub, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with call context and redacted values."""

    def __init__(self, service: str) -> None:
        """Tag every line with ``service``."""
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as redacted JSON."""
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = context.current()
        if call is not None:
            payload["request_id"] = call.request_id
            if call.tenant_id:
                payload["tenant_id"] = call.tenant_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(_redact_value(payload), default=str)


def configure(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Route the root logger to stderr as JSON (or plain text for local reading)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
