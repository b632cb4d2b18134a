"""Bare Starlette hello-world: the /health baseline for the benchmark."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "healthy"})


app = Starlette(routes=[Route("/health", health, methods=["GET", "HEAD", "POST"])])
