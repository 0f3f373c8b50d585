"""Structured logs: one JSON object a line (CONTACTS_LOG_FORMAT=json, as the images run) or
readable lines (console, the default on a developer's machine).

Context travels in contextvars: `service` for the process, `http_request_id` for an HTTP
request (X-Request-Id), `message_id` for a message being handled; `request_id`, when present,
is the contact-change request concerned. Bodies are never logged, and a last processor masks
anything that looks like a secret (tokens, JWTs, passwords, authorization values, the password
in a URL) whatever the key it was logged under.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

# Keys whose values are secrets, whatever they hold.
SECRET_KEY = re.compile(r"token|jwt|password|passwd|secret|authorization|cookie|api_key", re.IGNORECASE)
# A JWT anywhere in a string (three base64url parts, the first one starting a JSON object).
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# The password of a URL: scheme://user:password@host
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s/]+)(?=@)", re.IGNORECASE)
# `token=...` in a query string or a `Bearer ...` credential inside a message.
INLINE_SECRET = re.compile(r"(?P<head>(?:token|jwt|password|secret)=|bearer\s+)(?P<value>[^\s&\"']+)", re.IGNORECASE)
MASK = "***"


def redact_text(text: str) -> str:
    text = JWT.sub(MASK, text)
    text = URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return INLINE_SECRET.sub(lambda m: m.group("head") + MASK, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: MASK if SECRET_KEY.search(str(k)) and v else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secret values (by key) and secrets inside strings (by shape)."""
    return _redact_value(event_dict)


def _processors(log_format: str) -> tuple[list[Any], Any]:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return shared, renderer


def configure_logging(service: str, log_format: str = "console", log_level: str = "INFO") -> None:
    """Route structlog and the standard library's logging (uvicorn, the AMQP client) to stderr
    through the same processors, so every line has one format and passes the redaction."""
    level = getattr(logging, log_level.upper(), logging.INFO)
    shared, renderer = _processors(log_format)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
