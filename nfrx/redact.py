"""Redaction of URLs for everything operators read: logs, the agent's ``/status``, error texts,
``--print-config`` (pure: no I/O; a leaf: it imports nothing of ours).

Backend URLs may carry credentials (``http://user:pass@10.0.0.5:8000/v1``, ``?key=...``). The rule,
applied by :func:`redact_url` to one URL and by :func:`redact` to every URL inside a text:

* the userinfo (everything before ``@`` in the authority) becomes ``***``;
* every query and fragment value becomes ``***`` (names are kept: ``?key=***&api-version=***``),
  since nothing tells a secret value from a harmless one.

``http://user:pass@10.0.0.5:8000/v1?key=x`` becomes ``http://***@10.0.0.5:8000/v1?key=***``. The
host and path stay: they are what an operator needs to find a misconfigured backend. Clients never
get even that (the server answers them with generic messages); the log formatter applies
:func:`redact` to every line, as a second line of defence behind the call sites.
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
"""A URL inside free text: a scheme, ``://``, then anything up to whitespace or a quote."""

_AUTHORITY_END = re.compile(r"[/?#]")
_TRAILING: Final = ".,:;!?)]}"


def redact_url(url: str) -> str:
    """``url`` with its userinfo and its query and fragment values masked (see the module
    docstring); text without ``://`` is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    if "@" in authority:
        authority = MASK + "@" + authority.rpartition("@")[2]
    path, hash_sign, fragment = tail.partition("#")
    path, question, query = path.partition("?")
    if question:
        path += "?" + _mask_values(query)
    if hash_sign:
        path += "#" + _mask_values(fragment)
    return f"{scheme}://{authority}{path}"


def _mask_values(query: str) -> str:
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name, equals, _ = item.partition("=")
        parts.append(f"{name}={MASK}" if equals else (MASK if item else item))
    return "&".join(parts)


def redact(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` (punctuation right after
    a URL, as in ``at http://host/v1: refused``, is not taken for part of it)."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group()
    bare = url.rstrip(_TRAILING)
    return redact_url(bare) + url[len(bare) :]
