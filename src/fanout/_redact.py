"""Keeping secrets out of `--debug` output: botocore's debug log prints request headers, which
carry the access key ID, the signature and the session token.

`install` puts a filter on the root log handler that replaces, in every record's final text,
the credential values in the environment and anything shaped like an AWS secret (access key
IDs, signatures, security tokens, presigned-URL credentials) with `***`.
"""

from __future__ import annotations

import logging
import os
import re

_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"),  # access key IDs
    re.compile(r"(?i)(signature=)[0-9a-f]{16,}"),
    re.compile(r"(?i)(x-amz-signature=)[0-9a-f]+"),
    re.compile(r"(?i)(x-amz-credential=)[^&\s'\"]+"),
    re.compile(r"(?i)(credential=)[^,\s'\"]+"),
    re.compile(r"(?i)(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+"),
    re.compile(r"(?i)(aws_secret_access_key['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"),
    re.compile(r"(?i)(aws_session_token['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"),
]
_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


class _Redact(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._secrets = [v for name in _ENVIRONMENT if len(v := os.environ.get(name, "")) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self._secrets)
        record.args = None
        return True


def install() -> None:
    """Redact every log record the root handlers write (call after logging.basicConfig)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact())
