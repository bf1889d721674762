"""Keep passwords out of logs, metadata, plans and errors."""

import re

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password|pwd)=([^\s&;]+)")


def redact(text: str) -> str:
    """Replace passwords inside database URLs or key=value strings with ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group(1)}=***", text)
