"""urllib restricted to http(s): every URL the sandbox opens goes through here."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.client import HTTPResponse
from typing import cast

ALLOWED_SCHEMES = frozenset({"http", "https"})


def is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ALLOWED_SCHEMES and bool(parts.netloc)


def http_request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> urllib.request.Request:
    """A request for an http(s) URL; ValueError for any other scheme (file:, ftp:, ...)."""
    if not is_http_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310 - checked


def open_http(request: urllib.request.Request, timeout: float) -> HTTPResponse:
    """``urlopen`` for a request made by ``http_request`` (so its scheme is http or https)."""
    return cast(HTTPResponse, urllib.request.urlopen(request, timeout=timeout))  # noqa: S310 - checked
