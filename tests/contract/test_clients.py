"""The documents through the generators a frontend team would use (issue #27 §3):
openapi-typescript + openapi-fetch under `tsc --strict`, openapi-python-client with its default
settings and a flow through the client it makes against this server, and Redocly's
`recommended` rules. Each runs on the static document and on the document of a company with a
table of every column type (conftest.py). The tools come from package-lock.json (`npm ci`) and
the test extra (tools.py); under CI=true a missing one fails."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.generators import node_tools, python_generator, run, write_document

SAMPLES = Path(__file__).parent / "samples"
# Redocly `recommended` warnings we keep, each for a reason (docs/api.md "Generating a client")
ACCEPTED_WARNINGS = {
    # `/api/data/{table}/{row_id}` next to `/api/data/{table}/export`, `.../imports`: the row id
    # is 24 hex digits (its `pattern`; aiohttp routes by it), so no path is really ambiguous
    "no-ambiguous-paths",
    # `/health` and `/ready` take no input and no token: they answer 200 or 503, never a 4xx
    "operation-4xx-response",
    # the project has not chosen a license to state
    "info-license",
}


async def _static(client) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


async def _tenant(api, owner) -> dict[str, Any]:
    return await api.call("GET", "/api/openapi/tenant.json", owner, expect=200)  # type: ignore[no-any-return]


def _typescript(document: dict[str, Any], sample: str, tmp_path: Path) -> None:
    bin_dir = node_tools()
    write_document(document, tmp_path / "openapi.json")
    run(
        [str(bin_dir / "openapi-typescript"), "openapi.json", "-o", "api.d.ts"],
        tmp_path,
        "openapi-typescript",
    )
    shutil.copy(SAMPLES / sample, tmp_path / "sample.ts")
    shutil.copy(SAMPLES / "tsconfig.json", tmp_path / "tsconfig.json")
    (tmp_path / "node_modules").symlink_to(bin_dir.parent)
    run([str(bin_dir / "tsc"), "-p", "."], tmp_path, f"tsc --strict --noEmit on {sample}")


async def test_typescript_client_of_the_static_document(client, tmp_path):
    _typescript(await _static(client), "static.ts", tmp_path)


async def test_typescript_client_of_a_company_document(api, owner, every_type, tmp_path):
    _typescript(await _tenant(api, owner), "tenant.ts", tmp_path)


def _redocly(document: dict[str, Any], tmp_path: Path) -> None:
    bin_dir = node_tools()
    tmp_path.mkdir()
    write_document(document, tmp_path / "openapi.json")
    output = run(
        [str(bin_dir / "redocly"), "lint", "openapi.json", "--format=summary"],
        tmp_path,
        "redocly lint (recommended)",
    )
    problems = [
        line.split()[:2] for line in output.splitlines() if line.startswith(("error", "warning"))
    ]
    assert not [p for p in problems if p[0] == "error"], output
    warned = {rule.rstrip(":") for _, rule in problems}
    assert warned <= ACCEPTED_WARNINGS, output


async def test_redocly_recommended_rules_pass(client, api, owner, every_type, tmp_path):
    _redocly(await _static(client), tmp_path / "static")
    _redocly(await _tenant(api, owner), tmp_path / "tenant")


@pytest.fixture
def generated(tmp_path) -> Iterator[Any]:
    """openapi-python-client on a document, with its defaults: answers the imported package."""
    tool = python_generator()
    imported: list[str] = []

    def generate(document: dict[str, Any], name: str) -> Any:
        write_document(document, tmp_path / f"{name}.json")
        output = run(
            [str(tool), "generate", "--path", f"{name}.json", "--output-path", name],
            tmp_path,
            "openapi-python-client generate",
        )
        assert "Warning" not in output and "WARNING" not in output, output
        (package,) = [p for p in (tmp_path / name).iterdir() if (p / "client.py").exists()]
        sys.path.insert(0, str(tmp_path / name))
        imported.append(package.name)
        return importlib.import_module(package.name)

    yield generate
    sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path))]
    for module in list(sys.modules):
        if any(module == n or module.startswith(n + ".") for n in imported):
            del sys.modules[module]


def _module(package: Any, path: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{path}")


async def test_python_client_of_the_static_document(client, generated):
    """Sign up, create a table, write and list rows with a filter, read an error, export and
    import a file: every answer parsed into the generated models."""
    pkg = generated(await _static(client), "static")
    base = str(client.make_url("")).rstrip("/")
    public = pkg.Client(base_url=base)
    models = _module(pkg, "models")
    register = _module(pkg, "api.auth.auth_register")
    answer = await register.asyncio_detailed(
        client=public,
        body=models.RegisterIn.from_dict(
            {
                "company_name": "Acme",
                "email": "gen@example.com",
                "password": "correct-horse",
                "full_name": "Gen",
            }
        ),
    )
    assert answer.status_code == 201, answer.content
    api = pkg.AuthenticatedClient(base_url=base, token=answer.parsed.access_token)

    create_table = _module(pkg, "api.meta.tables_create_table")
    table = await create_table.asyncio_detailed(
        client=api,
        body=models.TableIn.from_dict(
            {
                "key": "deals",
                "columns": [
                    {"key": "title", "type": "string", "required": True},
                    {"key": "amount", "type": "integer"},
                ],
            }
        ),
    )
    assert table.status_code == 201, table.content
    assert isinstance(table.parsed, models.TableOut) and table.parsed.key == "deals"

    create_row = _module(pkg, "api.data.data_create_row")
    row_in = models.RowIn.from_dict({"title": "First", "amount": 7})
    created = await create_row.asyncio_detailed("deals", client=api, body=row_in)
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, models.Row)
    assert created.parsed.additional_properties["amount"] == 7
    assert isinstance(created.parsed.field_created_at, type(created.parsed.field_created_at))

    bad = await create_row.asyncio_detailed(
        "deals", client=api, body=models.RowIn.from_dict({"amount": "x"})
    )
    assert bad.status_code == 400
    assert isinstance(bad.parsed, models.ErrorResponse)
    assert bad.parsed.error.code == "validation_error"
    assert {d.field for d in bad.parsed.error.details} >= {"amount"}

    list_rows = _module(pkg, "api.data.data_list_rows")
    page = await list_rows.asyncio_detailed(
        "deals", client=api, filters='[{"field": "amount", "op": "gt", "value": 5}]'
    )
    assert page.status_code == 200, page.content
    assert isinstance(page.parsed, models.RowPage) and page.parsed.total == 1
    assert page.parsed.items[0].additional_properties["title"] == "First"

    export = _module(pkg, "api.files.files_export_rows")
    csv = await export.asyncio_detailed("deals", client=api)
    assert csv.status_code == 200 and isinstance(csv.parsed, str) and "First" in csv.parsed

    upload = _module(pkg, "api.files.files_upload_import")
    types = _module(pkg, "types")
    form = models.FilesUploadImportFilesBody(
        file=types.File(payload=_bytes("title,amount\nSecond,9\n"), file_name="deals.csv")
    )
    job = await upload.asyncio_detailed("deals", client=api, body=form)
    assert job.status_code == 201, job.content
    assert isinstance(job.parsed, models.ImportOut) and job.parsed.state == "uploaded"


def _bytes(text: str) -> Any:
    import io

    return io.BytesIO(text.encode())


async def test_python_client_of_a_company_document(client, api, owner, every_type, generated):
    pkg = generated(await _tenant(api, owner), "tenant")
    models = _module(pkg, "models")
    base = str(client.make_url("")).rstrip("/")
    authed = pkg.AuthenticatedClient(base_url=base, token=owner.access_token)
    create = _module(pkg, "api.deals.deals_create_row")
    body = models.RowInDeals(title="First", amount=5, stage=models.RowInDealsStage(2), active=True)
    created = await create.asyncio_detailed(client=authed, body=body)
    assert created.status_code == 201, created.content
    row = created.parsed
    assert isinstance(row, models.RowDeals) and row.title == "First" and row.amount == 5
    listing = _module(pkg, "api.deals.deals_list_rows")
    page = await listing.asyncio_detailed(client=authed, filters='[{"field": "stage", "value": 2}]')
    assert page.status_code == 200, page.content
    assert [r.title for r in page.parsed.items] == ["First"]
    bad = await create.asyncio_detailed(
        client=authed, body=models.RowInDeals(title="Second", email="not an address")
    )
    assert bad.status_code == 400 and bad.parsed.error.details[0].field == "email"
