"""The serving endpoint: precomputed predictions by key over HTTP (``batch-platform serve``).

A Starlette application over one :class:`~batch_platform.lib.serving.PredictionReader` (the online store opened
once; on the default wide SQLite store each lookup is one prepared point read, and the view's layout and TTL are
re-read when ``feast apply`` changes them):

- ``GET /predictions/{spec}/{key}``: 200 with the prediction (score, decision, model version and sha256, alias,
  run, day, fallback reason, scored_at, age, TTL); 404 ``not_found`` for a key never scored (or whose day was not
  pushed); 410 ``expired`` for a prediction older than the view's TTL (the day's scoring has not run since);
- ``POST /predictions/{spec}`` with ``{"keys": [...]}`` (at most :data:`MAX_KEYS`): 200 with one answer per key,
  in order, each with ``found`` and, when not found, its ``status`` and reason;
- unknown spec: 404 ``unknown_spec``; a malformed body: 400;
- ``GET /healthz``: the process answers; ``GET /readyz``: 200 when every spec's predictions view is in the store,
  503 (with the reason) otherwise.

JSON bodies; the answers are those of ``batch-platform predict --json`` for the same keys.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batch_platform.lib import serving

MAX_KEYS = 10_000
STATUS = {serving.FOUND: 200, serving.NOT_FOUND: 404, serving.EXPIRED: 410}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def _unknown_spec(exc: serving.UnknownSpec) -> Response:
    return _json({"error": "unknown_spec", "detail": str(exc)}, 404)


def create_app(reader: serving.PredictionReader) -> Starlette:
    async def one(request: Request) -> Response:
        try:
            answer = reader.lookup(request.path_params["spec"], request.path_params["key"])
        except serving.UnknownSpec as exc:
            return _unknown_spec(exc)
        return _json(answer.to_dict(), STATUS[answer.status])

    async def many(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _json({"error": "bad_request", "detail": "the body is not JSON"}, 400)
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            return _json({"error": "bad_request", "detail": 'expected {"keys": ["<key>", ...]}'}, 400)
        if len(keys) > MAX_KEYS:
            return _json({"error": "bad_request", "detail": f"{len(keys)} keys; at most {MAX_KEYS} per request"},
                         400)
        try:
            answers = reader.lookup_many(request.path_params["spec"], keys)
        except serving.UnknownSpec as exc:
            return _unknown_spec(exc)
        return _json({"spec": request.path_params["spec"], "predictions": [a.to_dict() for a in answers]})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, detail = reader.ready()
        return _json({"status": "ready" if ok else "not_ready", "detail": detail,
                      "specs": sorted(reader.specs)}, 200 if ok else 503)

    return Starlette(routes=[
        Route("/predictions/{spec}/{key}", one, methods=["GET"]),
        Route("/predictions/{spec}", many, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ])


def run(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning") -> None:
    """Serve the platform's specs from its configured online store until interrupted."""
    import uvicorn

    reader = serving.PredictionReader(serving.served_specs())
    try:
        uvicorn.run(create_app(reader), host=host, port=port, log_level=log_level, access_log=False)
    finally:
        reader.close()
