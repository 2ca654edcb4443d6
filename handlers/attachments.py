"""`/api/files`: files uploaded for attachment columns, and their download (docs/api.md
"Files"). The domain is crm_core/files/attachments.py."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, unquote

from aiohttp import web
from bson import ObjectId

from handlers.files import multipart_file
from handlers.routing import Authenticated, Call, RouteTable
from models.files import FILE_DOWNLOAD_CONTENT, FILE_UPLOAD_CONTENT, FileOut

routes = RouteTable("files")
log = logging.getLogger(__name__)

FILES = "/api/files"
FILE = f"{FILES}/{{file_id:[0-9a-fA-F]{{24}}}}"
AUTHENTICATED = Authenticated()
PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
UNSAFE_IN_QUOTES = re.compile(r"[^A-Za-z0-9 ._()\[\]-]")


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback name and the exact one in RFC 5987 form."""
    fallback = UNSAFE_IN_QUOTES.sub("_", name) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@routes.post(
    FILES,
    access=AUTHENTICATED,
    summary="Upload a file for an attachment column",
    request_content=FILE_UPLOAD_CONTENT,
    response=FileOut,
    status=201,
)
async def upload_file(call: Call) -> FileOut:
    """A multipart form with the file in the field `file`, streamed to storage. Answers its
    `id` (put it in an attachment column's list), `name`, `size`, `sha256` and `content_type`,
    which is read from the bytes (the client's declared type is ignored). The file belongs to
    your company; until a row holds it only you may download it, and a file no row holds is
    removed `FILE_ORPHAN_GRACE_SECONDS` after its upload. 413 above `FILE_MAX_BYTES` (nothing
    is kept); 400 naming `file` for a form without it or an empty file."""
    files = call.services.files
    files.check_upload(call.ctx)  # before a byte is read
    chunks, name, _declared = await multipart_file(call.request)
    # clients percent-encode names that are not ASCII (aiohttp's FormData, some browsers)
    name = unquote(name) if PERCENT_ESCAPE.search(name) else name
    return FileOut.from_record(await files.upload(call.ctx, chunks, name))


@routes.get(
    FILE,
    access=AUTHENTICATED,
    summary="Download a file",
    response_content=FILE_DOWNLOAD_CONTENT,
)
async def download_file(call: Call, file_id: ObjectId) -> web.StreamResponse:
    """Streams the file to a caller who may read a row holding it (or to its uploader while no
    row holds it). Anyone else gets 404, as for a file that does not exist. Always sent as a
    download (`Content-Disposition: attachment`, `X-Content-Type-Options: nosniff`)."""
    stored, chunks = await call.services.files.open(call.ctx, file_id)
    response = web.StreamResponse(
        headers={
            "Content-Type": stored.content_type,
            "Content-Disposition": content_disposition(stored.name),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store",
            "ETag": f'"{stored.sha256}"',
        }
    )
    response.content_length = stored.size
    await response.prepare(call.request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionResetError:  # the client went away mid-download
        log.info("download of file %s stopped: the client closed the connection", file_id)
        return response
    await response.write_eof()
    return response
