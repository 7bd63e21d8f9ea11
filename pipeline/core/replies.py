"""Reading the body of an HTTP reply from outside with a bound on its size.

A provider or a legacy image host that answers with an endless or huge body must not fill the process's memory:
the body is streamed and the read stops as soon as it passes the bound (or at once when the declared length
already does). The callers say what the refusal means for them (a provider error, a storage error).
"""

from __future__ import annotations

import requests

MB = 2**20
MAX_REPLY_BYTES = 8 * MB  # a chat or flow reply: ten personas of long bios are well under one megabyte
MAX_IMAGE_REPLY_BYTES = 64 * MB  # an image, or a JSON reply carrying one in base64
CHUNK_BYTES = 64 * 1024


def read_capped(response: requests.Response, limit: int) -> bytes | None:
    """The whole body of a reply requested with ``stream=True``, or None once it is longer than ``limit`` bytes.

    Counted after any content encoding is undone (a gzip bomb stops at the bound too). Network faults while
    reading raise the ``requests`` exceptions ``response.content`` would raise. The caller closes the response.
    """
    declared = (response.headers.get("Content-Length") or "").strip()
    if declared.isdecimal() and (len(declared) > 18 or int(declared) > limit):  # 18 digits: int() stays cheap
        return None
    body = bytearray()
    for chunk in response.iter_content(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def size_text(limit: int) -> str:
    """``limit`` for a message: "64 MB"."""
    return f"{limit / MB:g} MB" if limit >= MB else f"{limit:,} bytes"
