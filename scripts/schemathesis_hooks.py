"""Schemathesis hooks for scripts/fuzz.

Auth: one owner account is registered for the run; every generated request carries a token of
it. A fuzzed `POST /api/auth/logout` rightly revokes the token it was called with, so before
each request the token is checked and, when revoked, the same user signs in again: objects
created earlier in the run stay reachable (same tenant) for the stateful phase.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.error
import urllib.request

import email_validator
import schemathesis
from hypothesis import strategies as st

BASE_URL = os.environ["CRM_FUZZ_BASE_URL"]
EMAIL = f"fuzz-{secrets.token_hex(8)}@example.com"
PASSWORD = "fuzz-password"


def _call(method: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - a loopback URL set by scripts/fuzz
        f"{BASE_URL}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


_LOCK = threading.RLock()  # the run may have several workers; the seeding re-enters it
_STATE: dict[str, object] = {"token": None, "registered": False}


@schemathesis.auth(refresh_interval=None)
class FuzzOwner:
    def get(self, case, ctx):
        with _LOCK:
            token = _STATE["token"]
            if token is not None:
                status, _ = _call("GET", "/api/auth/me", token=str(token))
                if status == 200:
                    return token
            status, tokens = 0, None
            if not _STATE["registered"]:
                owner = {
                    "company_name": "Fuzz",
                    "full_name": "Fuzz Owner",
                    "email": EMAIL,
                    "password": PASSWORD,
                }
                status, tokens = _call("POST", "/api/auth/register", owner)
                _STATE["registered"] = True
            if tokens is None:  # registered before (by this or another worker): sign in
                credentials = {"email": EMAIL, "password": PASSWORD}
                status, tokens = _call("POST", "/api/auth/login", credentials)
            assert tokens is not None, f"could not sign in the fuzzing owner ({status})"
            _STATE["token"] = tokens["access_token"]
            return _STATE["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# `format: password` in our schema means 8 characters to 72 bytes of UTF-8 (bcrypt's limit),
# a byte bound that JSON Schema's maxLength (characters) cannot say by itself.
schemathesis.openapi.format(
    "password",
    st.text(min_size=8, max_size=72).filter(lambda s: len(s.encode()) <= 72),
)


def _deliverable_syntax(address: str) -> bool:
    try:
        email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return False
    return True


# `format: email` means what email-validator accepts without a DNS lookup: special-use domains
# such as `.test` or `.local` are refused, as the service refuses them.
schemathesis.openapi.format("email", st.emails().filter(_deliverable_syntax))


# ---- valid data for the operations whose validity depends on data -------------------------
#
# Random table keys, row ids and bodies reach rows, moves, bulk calls, shares and campaigns
# only as 400/404. So every other generated case of those operations is rewritten, before it is
# sent, into a valid call on objects seeded in the fuzzing company: two tables (one linking to
# the other) with rows of every column type, a second user and a role to share with, and a
# campaign. The other half keeps the fuzzed data, so both the refusals and the successes of
# each operation are exercised. Rows deleted by the run are topped up before each rewrite.

SEED_TABLE, LINKED_TABLE = "fuzz_deals", "fuzz_companies"
SEED_COLUMNS = [
    {"key": "title", "type": "string", "max_length": 200},
    {"key": "amount", "type": "integer"},
    {"key": "price", "type": "float"},
    {"key": "done", "type": "boolean"},
    {"key": "day", "type": "date"},
    {"key": "kind", "type": "select", "options": [{"label": "new"}, {"label": "won"}]},
    {"key": "email", "type": "email"},
    {"key": "phone", "type": "phone"},
    {"key": "company", "type": "link", "table": LINKED_TABLE},
]
MIN_ROWS = 6
_SEED: dict[str, object] = {}
_CALLS = {"n": 0}


def _token() -> str:
    return str(FuzzOwner().get(None, None))


def _seed() -> dict[str, object]:
    """Create (once) and top up the seeded objects; answers their ids."""
    token = _token()
    if _SEED:
        # a fuzzed DELETE /api/meta/tables/{table} may have dropped a seeded table: seed again
        for key in (LINKED_TABLE, SEED_TABLE):
            if _call("GET", f"/api/meta/tables/{key}", token=token)[0] == 404:
                _SEED.clear()
                break
    if not _SEED:
        _call(
            "POST",
            "/api/meta/tables",
            {"key": LINKED_TABLE, "columns": [{"key": "name", "type": "string"}]},
            token,
        )
        _call("POST", "/api/meta/tables", {"key": SEED_TABLE, "columns": SEED_COLUMNS}, token)
        companies = [
            _call("POST", f"/api/data/{LINKED_TABLE}", {"name": f"Co {i}"}, token)[1]
            for i in range(3)
        ]
        _SEED["companies"] = [c["id"] for c in companies if c]
        role = _call("POST", "/api/roles", {"name": "Fuzz role", "permissions": []}, token)[1]
        _SEED["role_id"] = role["id"] if role else None
        user = _call(
            "POST",
            "/api/users",
            {
                "email": f"fuzz-peer-{secrets.token_hex(6)}@example.com",
                "full_name": "Peer",
                "password": "peer-password",
                "role_ids": [],
            },
            token,
        )[1]
        _SEED["user_id"] = user["id"] if user else None
    _SEED["rows"] = _top_up(f"/api/data/{SEED_TABLE}", _row, token)
    if not _SEED.get("campaign_id"):
        _status, campaign = _call("POST", "/api/sms/campaigns", _campaign(0), token)
        _SEED["campaign_id"] = campaign["id"] if campaign else None
    return _SEED


def _top_up(base: str, make_row, token: str) -> list[str]:
    """The ids of up to 50 rows under `base`, creating rows until there are MIN_ROWS."""
    status, page = _call("GET", f"{base}?limit=50", token=token)
    ids = [row["id"] for row in (page or {}).get("items", [])]
    while len(ids) < MIN_ROWS:
        status, row = _call("POST", base, make_row(len(ids)), token)
        assert row is not None, f"could not seed a row in {base} ({status})"
        ids.append(row["id"])
    return ids


# the built-in tables' own routes, with the least a valid row needs
ENTITIES = {
    "/api/leads": lambda n: {"title": f"Lead {n}"},
    "/api/individuals": lambda n: {"last_name": f"Иванов {n}", "first_name": "Пётр"},
    "/api/legal-entities": lambda n: {"name": f"ООО Ромашка {n}"},
}


def _row(n: int) -> dict[str, object]:
    companies = list(_SEED.get("companies") or [])
    row: dict[str, object] = {
        "title": f"Deal {n} «ёлка»",
        "amount": (n * 7919) % 1_000_000 - 500_000,
        "price": n * 10.25,
        "done": n % 2 == 0,
        "day": f"2025-0{1 + n % 9}-1{n % 10}",
        "kind": 1 + n % 2,
        "email": f"deal{n}@example.com",
        "phone": f"+7916{n % 10_000_000:07d}",
    }
    if companies:
        row["company"] = companies[n % len(companies)]
    return row


def _campaign(n: int) -> dict[str, object]:
    if n % 2:
        return {
            "name": f"Fuzz {n}",
            "text": "Hello {{title}}",
            "table": SEED_TABLE,
            "phone_column": "phone",
            "filters": [{"field": "done", "value": True}],
        }
    return {"name": f"Fuzz {n}", "text": "Hi", "recipients": [{"phone": "+79161234567"}]}


def _rewrite(case, seed: dict[str, object], n: int) -> None:
    path, method = case.operation.path, case.method.upper()
    entity = next((prefix for prefix in ENTITIES if path.startswith(prefix)), None)
    if entity is not None:
        make_row = ENTITIES[entity]
        with _LOCK:
            rows = _top_up(entity, make_row, _token())
    else:
        make_row = _row
        rows = list(seed["rows"])  # type: ignore[call-overload]
    params = dict(case.path_parameters or {})
    if "table" in params:
        params["table"] = SEED_TABLE
    if "row_id" in params:
        params["row_id"] = rows[n % len(rows)]
    if "campaign_id" in params and seed.get("campaign_id"):
        params["campaign_id"] = seed["campaign_id"]
    case.path_parameters = params
    if path.startswith("/api/data/") or entity is not None:
        _rewrite_rows(case, method, rows, make_row, entity is not None, n)
    elif path == "/api/shares" and method == "POST":
        subject = {"user_id": seed["user_id"]} if n % 2 else {"role_id": seed["role_id"]}
        case.body = {"table": SEED_TABLE, "access": ["read", "write", "manage"][n % 3], **subject}
    elif path == "/api/sms/campaigns" and method == "POST":
        case.body = _campaign(n)


def _rewrite_rows(case, method: str, rows: list[str], make_row, builtin: bool, n: int) -> None:
    first, other = rows[n % len(rows)], rows[(n + 1) % len(rows)]
    tail = case.operation.path.rsplit("/", 1)[-1]
    one_row = "row_id" in (case.path_parameters or {})
    if method == "GET" and not one_row:
        case.query = (
            {"sort": "-_created_at", "limit": 1 + n % 20}
            if builtin
            else {
                "filters": json.dumps([{"field": "amount", "op": "gte", "value": -(10**6)}]),
                "sort": ["-amount,title", "day", "kind,-price"][n % 3],
                "expand": "company",
                "limit": 1 + n % 20,
            }
        )
    elif method == "GET":
        case.query = {} if builtin else {"expand": "company"}
    elif tail == "move":
        case.body = {"before_id": None if n % 3 == 0 else other}
    elif tail == "bulk" and method == "POST":
        case.body = {"items": [make_row(n), make_row(n + 1)]}
    elif tail == "bulk" and method == "PATCH":
        case.body = (
            {"items": [{"id": first, **make_row(n)}, {"id": other, **make_row(n + 1)}]}
            if n % 2
            else {"filters": [{"field": "id", "value": first}], "values": make_row(n)}
        )
    elif tail == "bulk-delete":
        case.body = {"ids": [first]} if n % 2 else {"filters": [{"field": "id", "value": first}]}
    elif method in ("POST", "PATCH"):
        case.body = make_row(n)


_DATA_PATHS = ("/api/data/", "/api/shares", "/api/sms/campaigns", *ENTITIES)


def _negative(case) -> bool:
    body = getattr(case, "body", None)
    if len(case.operation.body) and (body is None or type(body).__name__ == "NotSet"):
        return True  # a missing body is how the coverage phase tests a required body
    meta = getattr(case, "meta", None)
    if meta is None:
        return False
    generation = getattr(meta, "generation", None)
    if generation is not None and getattr(generation.mode, "is_negative", False):
        return True
    components = getattr(meta, "components", None) or {}
    return any(getattr(info.mode, "is_negative", False) for info in components.values())


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    path = case.operation.path
    if not path.startswith(_DATA_PATHS) or _negative(case):
        return  # negative cases must stay invalid: the checks expect them refused
    with _LOCK:
        _CALLS["n"] += 1
        n = _CALLS["n"]
        if n % 2:
            return  # keep the fuzzed data
        seed = _seed()
    _rewrite(case, seed, n)
