"""Passwords, secrets and the login rate limit.

Passwords are hashed with scrypt from `cryptography` at N=2^15, r=8, p=3 (OWASP's 32 MiB
setting), in a worker thread behind a small semaphore so a burst of logins cannot exhaust
memory or stall the event loop. Session cookies, API tokens and invite codes are random
256-bit secrets; only their sha256 is stored, so a copy of the database lets no one in.
"""

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import defaultdict, deque

import anyio
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from federation.encoding import b64url_encode
from federation.items import N_

SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 15, 8, 3
SALT_BYTES = 16
HASH_BYTES = 32
PASSWORD_MIN = 10
PASSWORD_MAX = 1024
PASSWORD_PARAMS = {"min": PASSWORD_MIN, "max": PASSWORD_MAX}


def _scrypt(salt: bytes, log_n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=HASH_BYTES, n=2**log_n, r=r, p=p)


def hash_password_sync(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P).derive(password.encode())
    return f"scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password_sync(password: str, stored: str) -> bool:
    try:
        scheme, log_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        _scrypt(bytes.fromhex(salt), int(log_n), int(r), int(p)).verify(
            password.encode(), bytes.fromhex(digest)
        )
    except (ValueError, InvalidKey):
        return False
    return True


# A hash to check against when the user does not exist, so timing does not tell who does.
_DUMMY_HASH = f"scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${'00' * SALT_BYTES}${'00' * HASH_BYTES}"


class Passwords:
    """Hash and check passwords in worker threads, at most `slots` at once."""

    def __init__(self, slots: int = 2) -> None:
        self._slots = asyncio.Semaphore(slots)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await anyio.to_thread.run_sync(hash_password_sync, password)

    async def verify(self, password: str, stored: str | None) -> bool:
        """Check a password; with no stored hash, spend the same time and say no."""
        async with self._slots:
            return await anyio.to_thread.run_sync(
                verify_password_sync, password, stored or _DUMMY_HASH
            )


def check_new_password(password: object) -> str | None:
    """Why a new password cannot be used (a message template filled by PASSWORD_PARAMS), or None."""
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        return N_("the password must be at least %(min)d characters")
    if len(password) > PASSWORD_MAX:
        return N_("the password must be at most %(max)d characters")
    return None


def new_secret() -> str:
    """A random 256-bit secret as base64url (43 characters)."""
    return b64url_encode(secrets.token_bytes(32))


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def per_worker(limit: int, workers: int) -> int:
    """A process's share of a limit that `workers` processes enforce, each counting alone:
    rounded up, so that a client all of whose requests reach one process (a browser on one
    kept-alive connection) is not held to less than its share. All processes together allow
    at most `workers` × that."""
    return -(-limit // workers)


class RateLimiter:
    """At most `limit` events per key in a sliding window of `window` seconds, in memory.

    Used for failed logins, per account and per client address. Memory is bounded: old
    events are dropped as they age, and keys with none left are forgotten.
    """

    def __init__(self, limit: int, window: float, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str) -> deque[float]:
        events = self._events[key]
        cutoff = self.clock() - self.window
        while events and events[0] <= cutoff:
            events.popleft()
        if not events:
            del self._events[key]
            return deque()
        return events

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        events = self._trim(key)
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window - self.clock()

    def hit(self, key: str) -> None:
        self._trim(key)
        self._events[key].append(self.clock())

    def reset(self, key: str) -> None:
        self._events.pop(key, None)
