"""Hostile requests to the serving API, each with the 4xx it must get (issue 14: input limits),
for tests/serving/test_limits.py and bench/faults.py.

Every case is something a careless or malicious client can send in a few kilobytes or a few
megabytes: bodies over the limit (declared or streamed), values the schemas refuse (NaN, NUL,
lone surrogates, overlong text, too many listings, deep JSON), images whose header promises
more pixels than the budget (a 20 KB PNG of 13000x13000 pixels decodes to gigabytes), and a
bearer token that is not ASCII. None of them may cost the process more than a few
milliseconds or megabytes, or answer a 5xx.
"""

from __future__ import annotations

import base64
import functools
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from serving.schemas import EXAMPLE_LISTING

MB = 1024 * 1024


@dataclass(frozen=True)
class HostileRequest:
    name: str
    expected: int  # the status it must get
    says: str  # what its detail must mention
    send: Callable[[httpx.Client], httpx.Response]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bomb(side: int = 13_000) -> bytes:
    """A complete, valid 1-bit PNG of ``side`` x ``side`` white pixels: about 20 KB of file,
    ``side``² bytes once Pillow decodes it (169 MB, and 1.4 GB as the floats digits reads)."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte "none", then the packed bits
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", header),
            png_chunk(b"IDAT", pixels),
            png_chunk(b"IEND", b""),
        )
    )


def npy_claiming(shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` header that claims ``shape`` float64 values, and none of the data."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(117) + "\n"  # magic (8) + length (2) + header: a multiple of 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def listing(**fields: object) -> dict:
    return {**EXAMPLE_LISTING, **fields}


def post_json_text(path: str, text: str) -> Callable[[httpx.Client], httpx.Response]:
    """A body sent as written: JSON with NaN, Infinity or escapes no encoder would produce."""
    headers = {"Content-Type": "application/json"}
    return lambda client: client.post(path, content=text.encode(), headers=headers)


def post_json(path: str, body: object) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.post(path, json=body)


def streamed(size: int) -> Iterator[bytes]:
    """``size`` bytes in 64 KB chunks without a Content-Length (chunked transfer)."""
    chunk = b" " * (64 * 1024)
    for _ in range(size // len(chunk)):
        yield chunk


def post_streamed(path: str, size: int) -> Callable[[httpx.Client], httpx.Response]:
    headers = {"Content-Type": "application/json"}
    return lambda client: client.post(path, content=streamed(size), headers=headers)


def upload(path: str, data: bytes, **params: str) -> Callable[[httpx.Client], httpx.Response]:
    files = {"file": ("photo.png", data, "image/png")}
    return lambda client: client.post(path, files=files, params=params)


def digits(image: str, **fields: object) -> dict:
    return {"request_id": "hostile", "image": image, **fields}


def reload_with_token(token: bytes) -> Callable[[httpx.Client], httpx.Response]:
    headers = {"Authorization": b"Bearer " + token}
    return lambda client: client.post("/v1/admin/reload", headers=headers)


PRICE = "/v1/price/predict"


def hostile_requests(max_body_bytes: int, vision_max_upload_bytes: int) -> list[HostileRequest]:
    """Every case, for a server with these two limits (``Settings`` defaults: 2 MiB, 10 MiB).
    The bearer token case expects 401: the server must have an admin token configured."""
    over_body = max_body_bytes + MB
    long_zip = listing(zip_code="0" * (max_body_bytes + 1))  # 413 before it is even parsed
    nan_bed = json.dumps({"listings": [listing()]}).replace('"bed": 3', '"bed": NaN')
    return [
        HostileRequest(
            "body over the limit (Content-Length)",
            413,
            f"limit is {max_body_bytes:,} bytes",
            post_json(PRICE, long_zip),
        ),
        HostileRequest(
            "body over the limit (chunked)",
            413,
            f"limit of {max_body_bytes:,} bytes",
            post_streamed(PRICE, over_body),
        ),
        HostileRequest(
            "a million listings",
            413,
            f"limit is {max_body_bytes:,} bytes",
            post_json_text(PRICE, '{"listings": [' + "{}," * 10**6),
        ),
        HostileRequest(
            "1,001 listings",
            422,
            "at most 1000 items",
            post_json(PRICE, {"listings": [EXAMPLE_LISTING] * 1001}),
        ),
        HostileRequest(
            "zip_code of 1,000 characters",
            422,
            "at most 20 characters",
            post_json(PRICE, {"listings": [listing(zip_code="9" * 1000)]}),
        ),
        HostileRequest(
            "city of 100,000 characters",
            422,
            "at most 100 characters",
            post_json(PRICE, {"listings": [listing(city="x" * 100_000)]}),
        ),
        HostileRequest(
            "NUL in city",
            422,
            "NUL characters",
            post_json(PRICE, {"listings": [listing(city="Bos\x00ton")]}),
        ),
        HostileRequest(
            "lone surrogate in state",
            422,
            "unicode string",
            post_json_text(PRICE, '{"listings": [{"status": "for_sale", "state": "\\ud800"}]}'),
        ),
        HostileRequest("bed: NaN", 422, "finite number", post_json_text(PRICE, nan_bed)),
        HostileRequest(
            "brokered_by: Infinity",
            422,
            "finite number",
            post_json_text(PRICE, '{"listings": [{"status": "sold", "brokered_by": Infinity}]}'),
        ),
        HostileRequest(
            "zip_code: -Infinity",
            422,
            "finite number",
            post_json_text(PRICE, '{"listings": [{"status": "sold", "zip_code": -Infinity}]}'),
        ),
        HostileRequest(
            "explain: acre_lot NaN",
            422,
            "finite number",
            post_json_text("/v1/price/explain", '{"listing": {"status": "sold", "acre_lot": NaN}}'),
        ),
        HostileRequest(
            "JSON nested 500,000 deep",
            400,
            "error parsing the body",
            post_json_text(PRICE, "[" * 500_000 + "]" * 500_000),
        ),
        HostileRequest(
            "digits: request_id of 10,000 characters",
            422,
            "at most 200 characters",
            post_json("/v1/digits/predict", digits(b64(b"\x00" * 64), request_id="r" * 10_000)),
        ),
        HostileRequest(
            "digits: NUL in request_id",
            422,
            "NUL characters",
            post_json("/v1/digits/predict", digits(b64(b"\x00" * 64), request_id="a\x00")),
        ),
        HostileRequest(
            "digits: 13000x13000 1-bit PNG (20 KB)",
            413,
            "169,000,000 pixels",
            post_json("/v1/digits/predict", digits(b64(png_bomb()))),
        ),
        HostileRequest(
            "course digits: 13000x13000 1-bit PNG (20 KB)",
            413,
            "169,000,000 pixels",
            post_json("/predict/", digits(b64(png_bomb()), model="digits")),
        ),
        HostileRequest(
            "digits: .npy header of 10^10 values",
            413,
            "10,000,000,000 pixels",
            post_json("/v1/digits/predict", digits(b64(npy_claiming((100_000, 100_000))))),
        ),
        HostileRequest(
            "course digits: request_id NaN",
            422,
            "finite number",
            post_json_text("/predict/", '{"request_id": NaN, "model": "digits", "image": "AA"}'),
        ),
        HostileRequest(
            "detect: 13000x13000 1-bit PNG (20 KB)",
            413,
            "13000x13000 pixels",
            upload("/v1/detect", png_bomb()),
        ),
        HostileRequest(
            "count: upload over the limit",
            413,
            "bytes; the limit is",
            upload("/v1/count", b"\x00" * (vision_max_upload_bytes + MB)),
        ),
        HostileRequest(
            "course count: confidence NaN",
            422,
            "finite number",
            upload("/countObjects", png_bomb(64), confidence="nan"),
        ),
        HostileRequest(
            "course count: object name of 10,000 characters",
            422,
            "at most 100 characters",
            upload("/countObjects", png_bomb(64), object="o" * 10_000),
        ),
        HostileRequest(
            "admin reload: Bearer é", 401, "valid bearer token", reload_with_token("é".encode())
        ),
    ]
