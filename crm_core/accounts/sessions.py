"""Ending sessions (docs/api.md "Sessions"): the one place that makes tokens die.

Every access token carries the user's `token_epoch` (claim `ep`) and every refresh token the
user's `session_epoch`. Authentication compares the claim with the user document it loads
anyway, so ending sessions costs no extra read per request. Epochs only grow: tokens ended
once never come back, not even when a deactivated user is reactivated.

- `end_all_sessions`: every access and refresh token of the user dies (deactivation, password
  change, temporary password). Optionally applies other changes in the same atomic update.
- `end_access_tokens`: every access token of the user dies, refresh tokens stay (a refresh
  family revoked by logout or theft detection: the user's other devices refresh once).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from beanie import PydanticObjectId

from crm_core.platform.storage import system_collection
from models.accounts import RefreshToken, User


async def end_all_sessions(
    user_id: PydanticObjectId,
    changes: dict[str, Any] | None = None,
    expect: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Bump both epochs (and `$set` `changes`) in one update, then revoke the refresh tokens.

    `expect` adds conditions on the stored user (e.g. the password hash the caller verified);
    returns the updated user document, or None when no user matched.
    """
    now = datetime.now(UTC)
    user = await system_collection(User).find_one_and_update(
        {"_id": user_id, **(expect or {})},
        {
            "$inc": {"token_epoch": 1, "session_epoch": 1},
            "$set": {**(changes or {}), "updated_at": now},
        },
        return_document=True,
    )
    if user is not None:
        await system_collection(RefreshToken).update_many(
            {"user_id": user_id, "revoked_at": None}, {"$set": {"revoked_at": now}}
        )
    return user


async def end_access_tokens(user_id: PydanticObjectId) -> None:
    """Every access token issued to the user so far stops working at its next request."""
    await system_collection(User).update_one({"_id": user_id}, {"$inc": {"token_epoch": 1}})


async def revoke_family(family_id: str, user_id: PydanticObjectId) -> None:
    """A refresh family ends (logout, reuse of a rotated token): its refresh tokens are revoked
    and the access tokens of the user issued before now stop working."""
    await system_collection(RefreshToken).update_many(
        {"family_id": family_id, "revoked_at": None},
        {"$set": {"revoked_at": datetime.now(UTC)}},
    )
    await end_access_tokens(user_id)
