"""Schemathesis hooks for scripts/fuzz.

Auth: one owner account is registered for the run; every generated request carries a token of
it. A fuzzed `POST /api/auth/logout` rightly revokes the token it was called with, so before
each request the token is checked and, when revoked, the same user signs in again: objects
created earlier in the run stay reachable (same tenant) for the stateful phase.

Valid calls: every other positive case of the operations whose success depends on data is
rewritten into a valid call on objects the hooks make through the documented API (see the
section below), so each operation is seen succeeding as well as refusing. What each operation
answered is appended to $CRM_FUZZ_ANSWERS (`METHOD /path/{template} STATUS` per line), which
scripts/fuzz_summary.py reads to list the operations that never answered 2xx.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
import zoneinfo

import email_validator
import schemathesis
from hypothesis import strategies as st

BASE_URL = os.environ["CRM_FUZZ_BASE_URL"]
EMAIL = f"fuzz-{secrets.token_hex(8)}@example.com"
PASSWORD = "fuzz-password"


RECEIVER_URL = os.environ.get("CRM_FUZZ_RECEIVER_URL", "")  # scripts/fuzz_receiver.py
ANSWERS = os.environ.get("CRM_FUZZ_ANSWERS")


def _call(
    method: str,
    path: str,
    body: dict | None = None,
    token: str | None = None,
    *,
    raw: str | None = None,
    base: str = BASE_URL,
    again: bool = True,
):
    headers = {"Content-Type": "text/csv" if raw is not None else "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    if raw is not None:
        data = raw.encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URLs set by scripts/fuzz
        f"{base}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            text = response.read()
            return response.status, json.loads(text) if text[:1] in (b"{", b"[") else None
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and again and token is not None and token == _STATE["token"]:
            # the owner's token ended by a way the hooks did not see: sign in again, once
            _CHECK["token"] = True
            return _call(method, path, body, _token(), raw=raw, base=base, again=False)
        return exc.code, None


_LOCK = threading.RLock()  # the run may have several workers; the seeding re-enters it
# the owner's password changes when a rewritten `POST /api/auth/password` succeeds (after_call)
_STATE: dict[str, object] = {"token": None, "registered": False, "password": PASSWORD}
# Whether the token may have been ended since it was last seen working: checking it with
# `GET /api/auth/me` before every request doubled the requests of the run, so it is checked
# only after an answer that may have ended it (_note_changes, in after_call).
_CHECK = {"token": True, "tables": True, "webhook": True}


@schemathesis.auth(refresh_interval=None)
class FuzzOwner:
    def get(self, case, ctx):
        with _LOCK:
            token = _STATE["token"]
            if token is not None and not _CHECK["token"]:
                return token
            if token is not None:
                status, _ = _call("GET", "/api/auth/me", token=str(token), again=False)
                if status == 200:
                    _CHECK["token"] = False
                    return token
            status, tokens = 0, None
            if not _STATE["registered"]:
                owner = {
                    "company_name": "Fuzz",
                    "full_name": "Fuzz Owner",
                    "email": EMAIL,
                    "password": str(_STATE["password"]),
                }
                status, tokens = _call("POST", "/api/auth/register", owner)
                _STATE["registered"] = True
            if tokens is None:  # registered before (by this or another worker): sign in
                credentials = {"email": EMAIL, "password": str(_STATE["password"])}
                status, tokens = _call("POST", "/api/auth/login", credentials)
            assert tokens is not None, f"could not sign in the fuzzing owner ({status})"
            _STATE["token"] = tokens["access_token"]
            _CHECK["token"] = False
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
_CALLS: dict[tuple[str, str], int] = {}  # positive cases seen per operation


def _token() -> str:
    return str(FuzzOwner().get(None, None))


def _seed() -> dict[str, object]:
    """Create (once) and top up the seeded objects; answers their ids."""
    token = _token()
    if _SEED and _CHECK.get("tables", True):
        # a fuzzed DELETE /api/meta/tables/{table} may have dropped a seeded table: seed again
        _CHECK["tables"] = False
        for key in (LINKED_TABLE, SEED_TABLE):
            if _call("GET", f"/api/meta/tables/{key}", token=token)[0] == 404:
                _SEED.clear()
                _ROWS.clear()
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
    if not _SEED.get("cancelled_id"):
        _SEED["cancelled_id"] = _cancelled_campaign(token)
    if _CHECK.get("webhook", True):
        _CHECK["webhook"] = False
        if _call("GET", f"/api/webhooks/{_SEED.get('webhook_id')}", token=token)[0] != 200:
            _SEED["webhook_id"] = _webhook(token, "seed")
    return _SEED


_ROWS: dict[str, list[str]] = {}  # the ids _top_up found per base, until rows may be gone


def _top_up(base: str, make_row, token: str) -> list[str]:
    """The ids of up to 50 rows under `base`, creating rows until there are MIN_ROWS."""
    if base in _ROWS:
        return _ROWS[base]
    status, page = _call("GET", f"{base}?limit=50", token=token)
    ids = [row["id"] for row in (page or {}).get("items", [])]
    while len(ids) < MIN_ROWS:
        status, row = _call("POST", base, make_row(len(ids)), token)
        assert row is not None, f"could not seed a row in {base} ({status})"
        ids.append(row["id"])
    _ROWS[base] = ids
    return ids


def _note_changes(method: str, path: str, status: int) -> None:
    """What an answer may have ended or removed, to look up again before it is used: the
    owner's token (any 401; a sign-out, a password or a user changed), the seeded tables, the
    seeded webhook, the rows known (any delete)."""
    changed = status < 300 and method != "GET"
    if status == 401 or (changed and path.startswith(("/api/auth/", "/api/users/"))):
        _CHECK["token"] = True
    if status >= 300:
        return
    if method == "DELETE" or path.endswith("/bulk-delete") or path.startswith("/api/trash"):
        _ROWS.clear()
        _CHECK["tables"] = _CHECK["tables"] or path.startswith("/api/meta/tables/")
        _CHECK["webhook"] = _CHECK["webhook"] or path.startswith("/api/webhooks/")


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


# ---- the operations whose success needs more than valid rows ------------------------------
#
# Imports need an uploaded file, webhooks a receiver the service may call (scripts/fuzz starts
# scripts/fuzz_receiver.py and lets the service reach loopback addresses), SMS cancel a campaign
# not yet completed, resolve a message whose fate is `unknown`, a password change the current
# password. Everything is made through the documented API (docs/api.md, docs/integrations.md,
# docs/sms.md), never by reaching into the service.

IMPORT_FILES = {  # a small CSV per import target: the seeded table and the built-in ones
    f"/api/data/{SEED_TABLE}": "title,amount,done,email\nImported 1,5,true,imp1@example.com\n"
    "Imported 2,-7,false,\n",
    "/api/leads": "title\nImported lead\n",
    "/api/individuals": "last_name,first_name\nИмпортов,Пётр\n",
    "/api/legal-entities": "name\nООО Импорт\n",
}
_UPLOADED: dict[str, str] = {}  # an upload kept in state `uploaded` per target, for previews


def _webhook(token: str, name: str) -> str | None:
    """A webhook on the seeded table and campaigns, delivering to the local receiver."""
    body = {
        "name": f"Fuzz {name}",
        "url": f"{RECEIVER_URL}/hook/{name}",
        "events": ["row.created", "row.updated", "row.deleted", "campaign.finished"],
        "tables": [SEED_TABLE],
    }
    _status, hook = _call("POST", "/api/webhooks", body, token)
    return hook["id"] if hook else None


def _cancelled_campaign(token: str) -> str | None:
    """A campaign cancelled while it was sending: the receiver holds its one message until
    released. A cancelled campaign is not completed, so cancelling it again answers 200."""
    body = {
        "name": "Fuzz cancelled",
        "text": "fuzz-hold",
        "recipients": [{"phone": "+79160000001"}],
    }
    _status, campaign = _call("POST", "/api/sms/campaigns", body, token)
    if campaign is None:
        return None
    status, _ = _call("POST", f"/api/sms/campaigns/{campaign['id']}/cancel", {}, token)
    _call("POST", "/release", {}, base=RECEIVER_URL)
    return str(campaign["id"]) if status == 200 else None


def _unknown_message(token: str) -> str | None:
    """A message whose fate is unknown: the receiver answers `fuzz-unknown` texts with
    something SMS.ru never says. A new campaign when the earlier ones have none left."""
    for campaign_id in list(_SEED.get("unknown_campaigns") or []):  # type: ignore[call-overload]
        found = _unknown_in(campaign_id, token)
        if found:
            return found
    recipients = [{"phone": f"+7916000{n:04d}"} for n in range(10, 15)]
    body = {"name": "Fuzz unknown", "text": "fuzz-unknown", "recipients": recipients}
    _status, campaign = _call("POST", "/api/sms/campaigns", body, token)
    if campaign is None:
        return None
    _SEED.setdefault("unknown_campaigns", []).append(campaign["id"])  # type: ignore[union-attr]
    deadline = time.monotonic() + 20  # the in-process sender answers in well under a second
    while time.monotonic() < deadline:
        _status, found = _call("GET", f"/api/sms/campaigns/{campaign['id']}", token=token)
        if found and found.get("status") == "completed":
            return _unknown_in(campaign["id"], token)
        time.sleep(0.1)
    return None


def _unknown_in(campaign_id: str, token: str) -> str | None:
    path = f"/api/sms/campaigns/{campaign_id}/messages?status=unknown&limit=1"
    _status, page = _call("GET", path, token=token)
    return str(page["items"][0]["id"]) if page and page.get("items") else None


def _upload(base: str, token: str) -> str | None:
    _status, job = _call(
        "POST", f"{base}/imports?filename=fuzz.csv", token=token, raw=IMPORT_FILES[base]
    )
    return job["id"] if job else None


def _uploaded(base: str, token: str) -> str | None:
    """An import of `base` still in state `uploaded` (a fuzzed call may have confirmed or
    deleted the last one)."""
    job_id = _UPLOADED.get(base)
    if job_id:
        _status, job = _call("GET", f"{base}/imports/{job_id}", token=token)
        if job and job.get("state") == "uploaded":
            return job_id
    job_id = _upload(base, token)
    if job_id:
        _UPLOADED[base] = job_id
    return job_id


def _import_base(path: str) -> str:
    if path.startswith("/api/data/"):
        return f"/api/data/{SEED_TABLE}"
    return next(prefix for prefix in IMPORT_FILES if path.startswith(prefix + "/"))


def _rewrite_files(case, seed: dict[str, object], n: int) -> None:
    """Uploads (a small CSV), previews, confirms, reads and deletes of imports, and exports."""
    path, method, token = case.operation.path, case.method.upper(), _token()
    base = _import_base(path)
    params = dict(case.path_parameters or {})
    if "table" in params:
        params["table"] = SEED_TABLE
    tail = path.rsplit("/", 1)[-1]
    if tail == "export":
        case.query = {"format": ["csv", "xlsx"][n % 2]}
        if base.startswith("/api/data/"):
            case.query.update({"sort": "-amount,title", "headers": "names", "include_id": True})
    elif tail == "imports" and method == "POST":
        case.body, case.media_type = IMPORT_FILES[base], "text/csv"
        case.query = {"filename": "fuzz.csv"}
    elif tail == "imports":
        case.query = {}
    elif method == "DELETE" or tail == "confirm":  # each takes a fresh upload
        params["import_id"] = _upload(base, token)
        if tail == "confirm":
            case.body = {"mode": ["skip_invalid", "all_or_nothing"][n % 2]}
    else:  # GET one import, preview
        params["import_id"] = _uploaded(base, token)
        if tail == "preview":
            case.body = {}
    case.path_parameters = params


def _rewrite_webhooks(case, seed: dict[str, object], n: int) -> None:
    path, method, token = case.operation.path, case.method.upper(), _token()
    if path == "/api/webhooks" and method == "POST":
        _prune_webhooks(token)
        case.body = {
            "name": f"Fuzz {n}",
            "url": f"{RECEIVER_URL}/hook/{n}",
            "events": [["row.created", "row.deleted"], ["campaign.finished"]][n % 2],
            "tables": [SEED_TABLE],
        }
        return
    if "webhook_id" not in (case.path_parameters or {}):
        return
    hook_id = _webhook(token, f"throwaway-{n}") if method == "DELETE" else seed["webhook_id"]
    case.path_parameters = {**case.path_parameters, "webhook_id": hook_id}
    if "delivery_id" in case.path_parameters and hook_id:
        delivery_id = _finished_delivery(str(hook_id), token)
        case.path_parameters = {**case.path_parameters, "delivery_id": delivery_id}
    if method == "PATCH":
        case.body = {"name": f"Fuzz seed {n}", "is_active": True}
    elif method == "GET" and path.endswith("/deliveries"):
        case.query = {}


def _prune_webhooks(token: str) -> None:
    """At most 100 webhooks per company (409 beyond): the run's own are deleted well before."""
    _status, page = _call("GET", "/api/webhooks", token=token)
    hooks = [h for h in (page or {}).get("items", []) if h["id"] != _SEED.get("webhook_id")]
    for hook in hooks[: max(0, len(hooks) - 50)]:
        _call("DELETE", f"/api/webhooks/{hook['id']}", token=token)


def _rewrite_meta(case, seed: dict[str, object], n: int) -> None:
    """Table renames and column changes on the seeded table; deletes on throwaway ones."""
    method, token = case.method.upper(), _token()
    params = dict(case.path_parameters or {})
    if "column" in params:
        params["table"] = SEED_TABLE
        if method == "DELETE":
            key = f"tmp_{n}"
            _call(
                "POST",
                f"/api/meta/tables/{SEED_TABLE}/columns",
                {"key": key, "type": "integer"},
                token,
            )
            params["column"] = key
        else:
            params["column"] = "title"
            case.body = {"name": f"Title {n}"} if n % 2 else {"max_length": 200 + n}
    elif method == "DELETE":
        params["table"] = f"fuzz_tmp_{n}"
        _call("POST", "/api/meta/tables", {"key": params["table"], "columns": []}, token)
        case.query = {}
    else:
        params["table"] = SEED_TABLE
        case.body = {"name": f"Fuzz deals {n}"}
    case.path_parameters = params


def _rewrite_sms(case, seed: dict[str, object], n: int) -> None:
    if case.operation.path.endswith("/resolve"):
        case.path_parameters = {"message_id": _unknown_message(_token())}
        case.body = {"outcome": ["sent", "failed", "resend"][n % 3]}
    else:  # cancel
        case.path_parameters = {"campaign_id": seed["cancelled_id"]}


def _rewrite_account(case, seed: dict[str, object], n: int) -> None:
    """Sign-in, refresh (of a session signed in for it), password change (to the other of two
    passwords) and new users."""
    path, password = case.operation.path, str(_STATE["password"])
    if path == "/api/auth/login":
        case.body = {"email": EMAIL, "password": password}
    elif path == "/api/auth/refresh":
        _status, tokens = _call("POST", "/api/auth/login", {"email": EMAIL, "password": password})
        case.body = {"refresh_token": tokens["refresh_token"] if tokens else "none"}
    elif path == "/api/auth/password":
        new = PASSWORD + "-2" if password == PASSWORD else PASSWORD
        case.body = {"current_password": password, "new_password": new}
    else:  # POST /api/users
        case.body = {
            "email": f"fuzz-user-{n}-{secrets.token_hex(4)}@example.com",
            "full_name": f"Fuzz user {n}",
            "password": "user-password",
            "role_ids": [seed["role_id"]] if n % 2 and seed.get("role_id") else [],
        }


# ---- history, trash, aggregates, SMS lists and callbacks, deliveries, live events ---------
#
# A revert needs a revision of the row (the hooks change the row first, then revert it to the
# revision before), a restore or a purge a row in the trash (a throwaway row deleted first), an
# aggregate the seeded table's columns, the stop list E.164 numbers, SMS.ru's callback the hash
# it signs with (sha256 of the server's SMSRU_API_ID and the data), a redelivery a finished
# delivery of the seeded webhook. `GET /api/events` answers SSE only with `Accept:
# text/event-stream`, and then streams until the connection closes: the hooks open it with a
# session of its own and end that session a moment later (docs/api.md "Live events": a revoked
# token closes its connections), so the stream ends with its `close` frame and a 200.

SMSRU_API_ID = os.environ.get("CRM_FUZZ_SMSRU_API_ID", "")  # the service's, set by scripts/fuzz
SSE_SECONDS = 1.0  # how long the hooks' SSE stream stays open before its session is ended
SSE_STREAMS = 3  # SSE streams the hooks open in a run


def _row_base(path: str) -> str:
    """`/api/data/fuzz_deals` or the built-in route (`/api/leads`) a row path is under."""
    entity = next((prefix for prefix in ENTITIES if path.startswith(prefix)), None)
    return entity or f"/api/data/{SEED_TABLE}"


def _rows_of(base: str, token: str) -> tuple[list[str], object]:
    make_row = ENTITIES.get(base, _row)
    return _top_up(base, make_row, token), make_row


def _revision(base: str, row_id: str, make_row, token: str, n: int) -> str | None:
    """A revision of the row to go back to: the row is changed first, so the revision before
    that change differs from the row as it is."""
    _call("PATCH", f"{base}/{row_id}", make_row(n + 1000), token)
    _status, page = _call("GET", f"{base}/{row_id}/history?limit=5", token=token)
    items = [r for r in (page or {}).get("items", []) if r["action"] != "deleted"]
    return str(items[min(1, len(items) - 1)]["id"]) if items else None


def _trashed_row(token: str, n: int) -> str | None:
    """The trash item of a throwaway row of the seeded table, deleted for the purpose."""
    base = f"/api/data/{SEED_TABLE}"
    _status, row = _call("POST", base, _row(n), token)
    if row is None:
        return None
    _call("DELETE", f"{base}/{row['id']}", token=token)
    _status, page = _call("GET", f"/api/trash?kind=row&table={SEED_TABLE}&limit=20", token=token)
    items = (page or {}).get("items", [])
    return next((str(i["id"]) for i in items if i.get("row_id") == row["id"]), None)


def _aggregate_query(builtin: bool, n: int) -> dict[str, object]:
    if builtin:
        return [{}, {"metrics": "count", "group_by": "_created_at:month"}][n % 2]
    return [
        {"group_by": "kind", "metrics": "count,sum:amount,avg:price", "sort": "-count"},
        {
            "group_by": "day:month,done",
            "metrics": "min:day,max:amount,count_distinct:email",
            "filters": json.dumps([{"field": "amount", "op": "gte", "value": -(10**6)}]),
        },
        {"metrics": "count"},
    ][n % 3]


def _rewrite_rows_extra(case, seed: dict[str, object], n: int) -> None:
    """History, reverts and aggregates of the seeded table's rows and the built-in tables'."""
    path, token = case.operation.path, _token()
    base = _row_base(path)
    builtin = not base.startswith("/api/data/")
    params = dict(case.path_parameters or {})
    if "table" in params:
        params["table"] = SEED_TABLE
    if path.endswith("/aggregate"):
        case.query = _aggregate_query(builtin, n)
    else:
        rows, make_row = _rows_of(base, token)
        params["row_id"] = rows[n % len(rows)]
        if path.endswith("/revert"):
            params["revision_id"] = _revision(base, params["row_id"], make_row, token, n)
        else:
            case.query = {"column": "title"} if n % 2 and not builtin else {}
    case.path_parameters = params


def _rewrite_trash(case, seed: dict[str, object], n: int) -> None:
    token = _token()
    if case.operation.path == "/api/trash/restore":
        ids = [_trashed_row(token, n), _trashed_row(token, n + 1)]
        case.body = {"ids": [i for i in ids if i]}
    else:  # restore or purge one item
        case.path_parameters = {"item_id": _trashed_row(token, n)}


def _phones(n: int) -> list[str]:
    return [f"+7916555{n % 10_000:04d}", f"8 (916) 556-{n % 100:02d}-{n % 77:02d}"]


def _rewrite_sms_more(case, seed: dict[str, object], n: int) -> None:
    """The preview (a campaign's body), the stop list (numbers) and SMS.ru's signed callback."""
    path = case.operation.path
    if path.endswith("/preview"):
        case.body = _campaign(n)
    elif path.endswith("/stop-list"):
        case.body = {"phones": _phones(n)}
    else:  # /api/sms/callbacks/smsru: a report on an id the service may not know (ignored)
        data = [f"sms_status\nfuzz-{n}\n{[103, 104, 105][n % 3]}\n{1_700_000_000 + n}"]
        digest = hashlib.sha256((SMSRU_API_ID + "".join(data)).encode()).hexdigest()
        case.body = {"data[]": data, "hash": digest}


# a PNG signature and a few bytes: the service sniffs `image/png` (docs/api.md "Files")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(8) + b"fuzz"


def _uploaded_file(token: str) -> str | None:
    """An attachment file the owner uploaded (held by no row yet: its uploader may read it)."""
    boundary = secrets.token_hex(8)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="fuzz.png"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode()
        + PNG
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(  # noqa: S310 - loopback URL set by scripts/fuzz
        f"{BASE_URL}/api/files",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return str(json.loads(response.read())["id"])
    except urllib.error.HTTPError:
        return None


def _rewrite_attachments(case, seed: dict[str, object], n: int) -> None:
    if case.method.upper() == "POST":
        case.body = {"file": PNG + str(n).encode()}
    else:
        case.path_parameters = {"file_id": _uploaded_file(_token())}


def _sendable_form(case) -> None:
    """A multipart field's name goes into a MIME header, where a control character is not
    allowed (the service rightly answers 400 naming `file`): positive cases keep the fields
    whose names can be sent."""
    body = getattr(case, "body", None)
    if isinstance(body, dict):
        case.body = {
            k: v for k, v in body.items() if not any(ord(c) < 32 or c == "\x7f" for c in k)
        }


def _finished_delivery(hook_id: str, token: str) -> str | None:
    """A finished delivery of the webhook's events (not a ping); a row is made when there is
    none yet, whose `row.created` delivery the local receiver takes at once."""
    deadline = time.monotonic() + 10
    made = False
    while time.monotonic() < deadline:
        path = f"/api/webhooks/{hook_id}/deliveries?status=succeeded&limit=20"
        _status, page = _call("GET", path, token=token)
        items = [d for d in (page or {}).get("items", []) if d.get("event") != "ping"]
        if items:
            return str(items[0]["id"])
        if not made:
            _call("POST", f"/api/data/{SEED_TABLE}", _row(0), token)
            made = True
        time.sleep(0.1)
    return None


def _no_stream(case) -> None:
    """Without the hooks' session ending it, an SSE answer to a valid token never ends."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "accept"}
    case.headers = headers


def _sse(case, seed: dict[str, object], n: int) -> None:
    """An SSE stream on a session of its own, ended SSE_SECONDS later (its `close` frame).
    A few suffice: each takes SSE_SECONDS; the others answer 400 naming `Accept`."""
    if n >= SSE_STREAMS:
        return
    credentials = {"email": EMAIL, "password": str(_STATE["password"])}
    _status, tokens = _call("POST", "/api/auth/login", credentials)
    if tokens is None:
        return
    session = tokens["access_token"]
    case.headers = {
        **(case.headers or {}),
        "Authorization": f"Bearer {session}",
        "Accept": "text/event-stream",
    }
    case.query = [{"tables": SEED_TABLE}, {"tables": SEED_TABLE, "campaigns": True}, {}][n % 3]
    timer = threading.Timer(SSE_SECONDS, _call, ("POST", "/api/auth/logout", {}, session))
    timer.daemon = True
    timer.start()


ACCOUNT_PATHS = ("/api/auth/login", "/api/auth/refresh", "/api/auth/password")


def _rewriter(path: str, method: str):
    """The rewrite for an operation's positive cases, or None to send them as generated."""
    if "/imports" in path or path.endswith("/export"):
        return _rewrite_files
    if path.startswith("/api/webhooks"):
        return _rewrite_webhooks
    if path.startswith("/api/meta/tables/{table}") and method in ("PATCH", "DELETE"):
        return _rewrite_meta
    if path.startswith("/api/sms/") and path.endswith(("/cancel", "/resolve")):
        return _rewrite_sms
    if path.startswith("/api/sms/") and path.endswith(("/preview", "/stop-list", "/smsru")):
        return None if (path, method) == ("/api/sms/stop-list", "GET") else _rewrite_sms_more
    if path.startswith("/api/trash/"):
        return _rewrite_trash
    if path == "/api/events":
        return _sse
    if path.startswith("/api/files"):
        return _rewrite_attachments
    if path.endswith(("/history", "/revert", "/aggregate")):
        return _rewrite_rows_extra
    if path in ACCOUNT_PATHS or (path, method) == ("/api/users", "POST"):
        return _rewrite_account
    if path.startswith(("/api/data/", "/api/shares", "/api/sms/campaigns", *ENTITIES)):
        return _rewrite
    return None


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


def _loopback_url(case) -> None:
    """A webhook's URL always names the local receiver: the fuzzed service may reach loopback
    addresses (WEBHOOK_ALLOW_PRIVATE_ADDRESSES), and nothing may leave the machine."""
    body = getattr(case, "body", None)
    if isinstance(body, dict) and isinstance(body.get("url"), str):
        body["url"] = f"{RECEIVER_URL}/hook/fuzzed"


def _known_timezone(case) -> None:
    """A time zone is declared as a string in IANA's format (a 597-name enum broke client
    generators, docs/api.md "Generating a client"), which no schema can check: a positive case
    names a real zone, so its other values reach the service's logic."""
    body = getattr(case, "body", None)
    if isinstance(body, dict) and isinstance(body.get("timezone"), str):
        try:
            zoneinfo.ZoneInfo(body["timezone"])
        except Exception:  # unknown, malformed, a folder of zones: not a zone
            body["timezone"] = "Europe/Moscow"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    path, method = case.operation.path, case.method.upper()
    negative = _negative(case)
    if path.startswith("/api/webhooks") and not negative:
        _loopback_url(case)
    if not negative:
        _known_timezone(case)
    if path == "/api/events":
        _no_stream(case)  # only the hooks' own SSE calls (_sse) may stream
    if path == "/api/files" and not negative:
        _sendable_form(case)
    rewrite = _rewriter(path, method)
    if rewrite is None or negative:
        return  # negative cases must stay invalid: the checks expect them refused
    with _LOCK:
        n = _CALLS.get((method, path), 0)
        _CALLS[(method, path)] = n + 1
        if n % 2:
            return  # keep the fuzzed data
        rewrite(case, _seed(), n // 2)  # n // 2: the how-many-th rewrite
        headers = case.headers or {}
        if rewrite is not _sse and "Authorization" in headers:  # the token may be new since
            case.headers = {**headers, "Authorization": f"Bearer {_token()}"}


@schemathesis.hook
def after_call(ctx, case, response):
    path, method, status = case.operation.path, case.method.upper(), response.status_code
    with _LOCK:
        if path == "/api/auth/password" and status == 200 and isinstance(case.body, dict):
            # every session ended and the password is the new one: the answer signs in again
            _STATE["password"] = case.body["new_password"]
            _STATE["token"] = response.json()["access_token"]
        _note_changes(method, path, status)
        if ANSWERS:
            with open(ANSWERS, "a", encoding="utf-8") as answers:
                answers.write(f"{method} {path} {status}\n")
