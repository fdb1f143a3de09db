"""The doctor's ``/verify`` page and the auditor's ``/audit`` page, with their static files.

Why served by the app: clinics and auditors must not depend on a CDN (no internet in many hospital
networks, and a third-party script could rewrite a verdict), so every byte the pages run comes from
this package. The pages are plain ES modules; the only vendored code is jsQR (Apache-2.0), loaded on
demand when a QR image is decoded. A strict Content-Security-Policy allows scripts from this origin only;
``connect-src`` stays open because the doctor may check roots against a JSON-RPC endpoint of her choice.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from mrledger.http.problems import Problem

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".svg": "image/svg+xml"}
#: The files that may be served, fixed at import: a request can never reach outside ``static/``.
FILES = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file() and p.suffix in _TYPES}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob:; connect-src 'self' http: https:; form-action 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Permissions-Policy": "camera=(self), microphone=(), geolocation=()"}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> Response:
    return FileResponse(FILES[name], media_type=_TYPES[".html"], headers={**HEADERS, "Cache-Control": "no-cache"})


@router.get("/verify")
def verify_page() -> Response:
    """For doctors: a receipt, a QR or a held record in, one large verdict out."""
    return _page("verify.html")


@router.get("/audit")
def audit_page() -> Response:
    """For auditors: batches and gaps per hospital, lineage of a result, anchoring delay."""
    return _page("audit.html")


@router.get("/web/{name:path}")
def static(name: str) -> Response:
    """The pages' scripts, styles and vendored files; revalidated so an upgrade reaches every clinic."""
    path = FILES.get(name)
    if path is None or path.suffix == ".html":
        raise Problem(404, "not-found", "Not found", f"no static file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={**HEADERS, "Cache-Control": "no-cache"})
