"""Uploading files for attachment columns (`POST /api/files`) as a client does."""

from __future__ import annotations

from typing import Any

from aiohttp import FormData

from tests.support.api import Account, Api

# the first bytes of a PNG (signature and IHDR): enough for the content type to be sniffed
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + bytes(
    300
)


def form(data: bytes, name: str = "photo.png", declared: str = "text/html") -> FormData:
    """A multipart form with `data` in the field `file`; `declared` is the client's claimed
    type, which the service must ignore."""
    body = FormData()
    body.add_field("file", data, filename=name, content_type=declared)
    return body


async def upload(
    api: Api, account: Account, data: bytes = PNG, name: str = "photo.png", expect: int = 201
) -> Any:
    return await api.call("POST", "/api/files", account, expect=expect, data=form(data, name))


def raw_form(data: bytes, filename: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, `filename` sent byte for byte (a hostile client's,
    which aiohttp's FormData would refuse to write); answers the body and its headers."""
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/html\r\n\r\n" + data + b"\r\n--b0undary--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=b0undary"}
