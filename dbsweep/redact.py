"""Keep passwords out of logs, metadata, plans and errors, in every form a database URL or a
libpq connection string takes."""

import re

# user:password@ in a URL's authority, up to its last '@': a password may hold a raw '@' or a space
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/?#]*)@")
# password=... in a URL's query or a keyword/value connection string, quoted or not
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password|pwd|passwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&;]+)")


def redact(text: str) -> str:
    """Replace passwords inside database URLs or key=value strings with ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def scheme_only(raw: str) -> str:
    """What may be shown of a value that is not a URL at all: its scheme, if it has one."""
    scheme, sep, _ = raw.partition("://")
    return f"{scheme}://…" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme) else "a value with no URL scheme"
