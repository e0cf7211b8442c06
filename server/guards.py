"""ASGI middleware that refuses requests before any endpoint sees them.

- `HostCheck`: the Host header must name localhost, an IP address, or a host of
  `GPT2DICT_ALLOWED_HOSTS`. DNS rebinding (a web page whose own host name suddenly resolves to
  127.0.0.1, letting its scripts read this server's answers) always sends the attacker's host
  name, never an IP address, so IP addresses are safe to accept: the viewer stays reachable as
  http://127.0.0.1:24577 and, when bound to 0.0.0.0, as http://<this machine's address>:24577.
- `BodyLimit`: a request body over `GPT2DICT_MAX_BODY_BYTES` is refused with 413, by its
  Content-Length when it has one and while it streams in when it is chunked, so no endpoint
  ever parses (or holds in memory) more than the limit.

Both are plain ASGI middleware (not Starlette's BaseHTTPMiddleware): they answer directly and
never start the app for a refused request.
"""

from __future__ import annotations

import ipaddress
import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost",)


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """The server's error shape `{"detail": ...}`, sent straight to the client; the connection is
    closed afterwards because an unread request body may follow."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[^:\[\]@/\s]*))(?::\d*)?")


def host_name(host_header: str) -> str | None:
    """The host of a Host header, lowercased, without port, brackets or a trailing dot
    ("LocalHost.:8000" -> "localhost", "[::1]:24577" -> "::1"); None when it is malformed."""
    match = _HOST_HEADER.fullmatch(host_header.strip().lower())
    if match is None:
        return None
    return match["ipv6"] or match["name"].rstrip(".") or None


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostCheck:
    """Refuse (400) a request whose Host is not localhost, an IP address or an allowed host name."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allow_any = "*" in allowed_hosts
        self.allowed = set(LOOPBACK_NAMES) | {host_name(h) for h in allowed_hosts} - {None}

    def allows(self, host: str | None) -> bool:
        return host is not None and (host in self.allowed or is_ip_address(host))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allow_any:
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"host")
        header = raw.decode("latin-1") if raw is not None else None
        host = host_name(header) if header is not None else None
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        if header is None:
            problem, fix = "is missing", "send the Host header (every HTTP/1.1 client does)"
        elif host is None:
            problem, fix = f"{header[:100]!r} is malformed", "send host[:port]"
        else:
            problem, fix = f"{header[:100]!r} is not allowed", f"add {host[:100]!r} to GPT2DICT_ALLOWED_HOSTS to reach it by that name"
        await send_error(send, 400, f"The Host header {problem}: this server answers to localhost, IP addresses and "
                                    f"the host names in GPT2DICT_ALLOWED_HOSTS (a guard against DNS rebinding); {fix}.")


class BodyLimit:
    """Refuse (413) a request body over `max_bytes`: at once by Content-Length, else while it streams.

    The body is read here (at most `max_bytes` of it) and handed to the app in one piece; an
    exception raised from the app's `receive` would not do, FastAPI turns those into a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refuse(self, send: Send, size: str):
        return send_error(send, 413, f"The request body has {size} bytes; the limit is {self.max_bytes} "
                                     "(GPT2DICT_MAX_BODY_BYTES). Send a shorter text.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, str(int(length)))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, f"more than {self.max_bytes}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the real channel, which reports a disconnect

        await self.app(scope, replay, send)
