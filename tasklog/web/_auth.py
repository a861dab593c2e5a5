"""HTTP Basic authentication for every page and endpoint, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BasicAuth", "parse_credentials"]


def parse_credentials(auth: str | Sequence[str]) -> tuple[str, str]:
    """``"user:password"`` or ``(user, password)`` as a pair.

    Raises:
        ValueError: no user, no password, or no colon.
    """
    if isinstance(auth, str):
        user, sep, password = auth.partition(":")
        if not sep:
            msg = "auth must be 'USER:PASSWORD' (a colon between them)."
            raise ValueError(msg)
    else:
        pair = tuple(auth)
        if len(pair) != 2 or not all(isinstance(v, str) for v in pair):
            msg = "auth must be 'USER:PASSWORD' or a (user, password) pair of strings."
            raise ValueError(msg)
        user, password = pair
    if not user or not password:
        msg = "auth needs both a user name and a password ('USER:PASSWORD')."
        raise ValueError(msg)
    return user, password


class BasicAuth:
    """ASGI middleware: answer 401 unless the request carries the credentials."""

    def __init__(self, app: ASGIApp, user: str, password: str, realm: str = "tasklog") -> None:
        self.app = app
        self.user = user.encode()
        self.password = password.encode()
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'.encode()

    def allowed(self, header: bytes) -> bool:
        """Whether an ``Authorization`` header value carries the credentials."""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, self.user)
        password_ok = hmac.compare_digest(password, self.password)
        return bool(sep) and user_ok and password_ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authenticated request on; answer 401 to the others."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # pragma: no cover  (no websocket routes)
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "Authentication required (HTTP Basic)."}).encode()
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", self.challenge),
            ],
        })
        await send({"type": "http.response.body", "body": body})
