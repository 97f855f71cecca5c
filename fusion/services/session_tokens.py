"""The token a browser keeps in a cookie to stay signed in across a reload: the account's name and
when it signed in, signed with HMAC-SHA256 under a key kept in the workspace, and expiring with
the session (settings.session_minutes). Never the password. What it claims is checked again on
every use (accounts.check_session): a disabled account, a changed password or a sign-out since
then ends it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fusion.core.atomic import write_bytes_atomic
from fusion.core.settings import Settings

COOKIE = "fusionlab_session"


def _key(settings: Settings) -> bytes:
    """The workspace's signing key, made on first use (readable by its owner only)."""
    path = Path(settings.home) / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, secrets.token_bytes(32))
        os.chmod(path, 0o600)
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def issue(settings: Settings, name: str, signed_in_at: datetime) -> str:
    expires = signed_in_at + timedelta(minutes=settings.session_minutes)
    payload = json.dumps({"name": name, "at": signed_in_at.isoformat(), "until": expires.isoformat()}).encode()
    signature = hmac.new(_key(settings), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def read(settings: Settings, token: str | None, now: datetime) -> tuple[str, datetime] | None:
    """(name, signed-in time) from a token this workspace signed and that has not expired; None
    for anything else (forged, altered, expired, or not a token at all)."""
    try:
        payload_text, signature_text = (token or "").split(".")
        payload = _unb64(payload_text)
        if not hmac.compare_digest(_unb64(signature_text), hmac.new(_key(settings), payload, hashlib.sha256).digest()):
            return None
        claims = json.loads(payload)
        if _naive_utc(datetime.fromisoformat(claims["until"])) <= _naive_utc(now):
            return None
        return claims["name"], datetime.fromisoformat(claims["at"])
    except (ValueError, KeyError, TypeError):
        return None
