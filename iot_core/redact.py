"""Passwords out of what is shown: URLs in messages, and error text that may echo a connection string.

`redact_url` is the one way a URL with a password is shown (`postgresql://u:***@host:5432/db`);
`redact_text` scrubs free text (a driver's error message), which can quote a URL or a `password=...`
connection string, and any secret named explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
#: `scheme://user:password@`: the password runs to the last `@` of the token (an unencoded `@` in a
#: password then hides more than the password, never less).
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s\"']*):\S*@")
#: `password=value` of a key/value connection string, quoted or not.
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***` (user, host, port, path and query kept); a URL that does
    not parse is scrubbed as text."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return redact_text(url)
    if password is None:
        return redact_text(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with URL passwords, `password=` values and every non-empty string of `secrets` masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    return _KEYWORD_PASSWORD.sub(rf"\1{MASK}", text)


def url_password(url: str) -> str | None:
    """The password of `url` (None when it has none or does not parse), to scrub it from text."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None
