"""Masking credentials in URLs before they are shown, logged or sent with a job.

Store URLs carry passwords (`postgresql://user:pw@host/db`, `redis://:pw@host:6379/0`,
`s3://bucket?secret_key=...`). Anything a person or the Ray dashboard can read gets the
masked form. Named `redact`, not `secrets`, so that it never shadows the stdlib module.

Regular expressions rather than sqlalchemy's `make_url` or `urllib.parse`: one rule for
every scheme the settings accept (databases, Redis, S3, HTTP), and a password with an
unencoded `@`, `?` or `#` is still masked whole instead of being split into host and
query by a strict parser.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:  - the user has no ':', '/', '@'. The password after it runs to the last '@'
# (generated passwords hold '/', '@', '?' unencoded, and SQLAlchemy accepts them), unless what
# stands there is a port and a path (`http://host:8265/a@b` has no password).
_USER = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*):")
_PORT_AND_PATH = re.compile(r"\d{1,5}(?:[/?#].*)?", re.DOTALL)
# ?password=..., &secret_key=..., ;token=... (pyarrow's S3 URIs take credentials as query keys).
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[^=&;#]*(?:pass|pwd|secret|token|credential|key)[^=&;#]*)=)(?P<value>[^&;#]+)",
    re.IGNORECASE)
# A URL inside free text (an error message, a repr): up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]+")


def has_secret(url: str) -> bool:
    """Whether `url` carries a password or a secret query parameter."""
    return redact_url(url) != url


def redact_url(url: str) -> str:
    """`url` with its password and secret query values replaced by `***`; anything else as is."""
    match = _USER.match(url)
    if match:
        rest = url[match.end():]
        at = rest.rfind("@")
        # `host:8265/a@b` is a port and a path only when nothing after the '@' looks like
        # `host/path`; when in doubt, mask (a masked location is safe, a shown password is not).
        port_and_path = _PORT_AND_PATH.fullmatch(rest[:at]) and "/" not in rest[at + 1:]
        if at > 0 and not port_and_path:
            url = f"{match.group('head')}:{MASK}@{rest[at + 1:]}"
    if "?" in url:
        url = _QUERY_SECRET.sub(lambda m: f"{m.group('head')}{MASK}", url)
    return url


def redact_text(text: str) -> str:
    """Every URL in `text` masked, for messages that quote a value they did not build."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def url_location(url: str) -> str:
    """Where a URL points, without who connects: scheme, host, port, path (no userinfo,
    no query). Two URLs with different credentials for the same store share it."""
    masked = redact_url(url).split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = masked.partition("://")
    if not sep:
        return masked
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"
