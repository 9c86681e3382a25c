"""The benchmarks' HTTP/1.1 client: requests encoded once, up front, as bytes, sent on a raw
keep-alive connection, answers read by Content-Length. Per request it costs far less CPU than
an HTTP library (httpx spends about 2 ms building and parsing one multipart upload), so the
benchmarks time the server, not the client that shares its 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import uuid


def request_bytes(path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def json_request(path: str, body: dict) -> bytes:
    return request_bytes(path, json.dumps(body).encode(), "application/json")


def multipart_request(
    path: str, fields: dict[str, str], file_name: str, file_bytes: bytes, file_type: str
) -> bytes:
    """A form of ``fields`` and one ``file`` part, as browsers and httpx send uploads."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: {file_type}\r\n\r\n".encode()
    )
    body = b"".join(parts) + file_bytes + f"\r\n--{boundary}--\r\n".encode()
    return request_bytes(path, body, f"multipart/form-data; boundary={boundary}")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    return status, await reader.readexactly(length)
