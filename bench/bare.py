"""The bare-route baseline: Litestar on uvicorn with one GET route returning ready JSON bytes.

Served exactly like `nome serve` (uvicorn, one worker, same loop and HTTP implementation), so
the ratio to `GET /v1/threads/{id}` is what NOME's middleware, auth and Redis reads cost.
The payload is the size of a thread document.
"""

from __future__ import annotations

from litestar import Litestar, Response, get

_DOC = (
    b'{"id":"0b7e4c1a-3f59-4d2e-9a61-5c0d8f2b7e11","title":"bench thread","metadata":{},'
    b'"created_at":"2025-01-01T00:00:00.000000Z","updated_at":"2025-01-01T00:00:00.000000Z",'
    b'"message_count":0,"last_run_id":null,"active_run_id":null}'
)


@get("/doc/{doc_id:str}")
async def doc(doc_id: str) -> Response[bytes]:
    return Response(_DOC, media_type="application/json")


app = Litestar(route_handlers=[doc], logging_config=None, debug=False)
