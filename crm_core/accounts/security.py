"""Passwords (bcrypt in an executor), access tokens (HS256 JWT) and refresh token secrets."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import bcrypt
import jwt

from crm_core.platform.errors import Unauthorized, ValidationFailed
from crm_core.platform.passwords import PASSWORD_MAX_BYTES, password_problem
from crm_core.platform.settings import MIN_SECRET_KEY_BYTES

JWT_ALGORITHM = "HS256"
BCRYPT_ROUNDS = 12
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "tid"]


def check_password_policy(password: str, field: str = "password") -> None:
    problem = password_problem(password)
    if problem is not None:
        raise ValidationFailed.field(field, problem)


async def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    check_password_policy(password)
    loop = asyncio.get_running_loop()
    hashed = await loop.run_in_executor(
        None, partial(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds))
    )
    return hashed.decode()


async def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode()
    if len(encoded) > PASSWORD_MAX_BYTES:
        return False
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, partial(bcrypt.checkpw, encoded, password_hash.encode())
    )


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    tenant_id: str
    jti: str
    expires_at: datetime
    epoch: int = 0  # the user's token_epoch when issued (`ep`; tokens from before it carry 0)


class TokenCodec:
    """Signs and checks access tokens; decoding pins the algorithm and required claims."""

    def __init__(self, secret_key: str, ttl_seconds: int) -> None:
        if len(secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"the signing key must be at least {MIN_SECRET_KEY_BYTES} bytes")
        self._key = secret_key
        self.ttl_seconds = ttl_seconds

    def issue(
        self, user_id: str, tenant_id: str, now: datetime | None = None, epoch: int = 0
    ) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": user_id,
            "tid": tenant_id,
            "ep": epoch,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + timedelta(seconds=self.ttl_seconds),
            "typ": "access",
        }
        return jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM)

    def decode(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[JWT_ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("The access token is not valid") from None
        if claims.get("typ") != "access" or not all(
            isinstance(claims[c], str) for c in ("sub", "tid", "jti")
        ):
            raise Unauthorized("The access token is not valid")
        epoch = claims.get("ep", 0)
        if type(epoch) is not int:
            raise Unauthorized("The access token is not valid")
        return AccessClaims(
            user_id=claims["sub"],
            tenant_id=claims["tid"],
            jti=claims["jti"],
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            epoch=epoch,
        )


def new_temporary_password() -> str:
    """16 URL-safe characters (96 random bits): typed once, then replaced by the user."""
    return secrets.token_urlsafe(12)


def new_refresh_secret() -> str:
    return secrets.token_urlsafe(48)


def secret_digest(secret: str) -> str:
    """Long random secrets (refresh tokens, API tokens, panel sessions) are stored as SHA-256
    digests: they are not passwords, so a fast hash is enough and a lookup by digest works."""
    return hashlib.sha256(secret.encode()).hexdigest()
