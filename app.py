"""The web app: the Streamlit pages of ``Home.py`` plus the route that streams prepared gallery downloads.

``streamlit run app.py`` (``scripts/app.sh``) serves both. ``/downloads/<token>`` sends a file prepared by
``pipeline.outputs.downloads`` straight from disk, in chunks, as an attachment; a forged, expired or revoked
link gets 403 and a file that is gone 404, each with a plain message.
"""

from __future__ import annotations

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.core.errors import NotFoundError, PipelineError
from pipeline.outputs.downloads import ROUTE, serve_download


async def download(request: Request) -> Response:
    """Stream one prepared download (the token is the whole authorisation: it is signed and short-lived)."""
    try:
        found = await run_in_threadpool(serve_download, request.path_params["token"])
    except NotFoundError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    except PipelineError as exc:
        return PlainTextResponse(str(exc), status_code=403)
    return FileResponse(
        found.path,
        media_type=found.mime,
        filename=found.filename,
        content_disposition_type="attachment",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


app = st.App("Home.py", routes=[Route(ROUTE + "{token}", download, methods=["GET", "HEAD"])])
