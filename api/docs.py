"""The API's reference pages, made to work with no internet: Swagger UI at `/docs` and ReDoc at
`/redoc` load their scripts, styles and icon from this server (the `fastapi-offline` package ships
them; `create_api` mounts them at `DOCS_ASSETS`), not from a CDN.

Both pages are sent with a Content-Security-Policy that allows this server only, so the browser
fetches nothing from another machine: ReDoc's sidebar would otherwise load Redocly's logo from
their CDN (the page hides the image when it cannot load).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

DOCS_ASSETS = "/docs-assets"  # where create_api mounts fastapi-offline's static files
# This server, and what a page makes itself: inline scripts and styles, data: URIs, blob: workers,
# and eval (ReDoc compiles the schemas with ajv).
CONTENT_SECURITY_POLICY = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def install_docs(app: FastAPI) -> None:
    """Add `/docs` and `/redoc` to `app`, which serves its OpenAPI document at `app.openapi_url`
    and fastapi-offline's assets at `DOCS_ASSETS`. URLs are relative to where the app is mounted
    (its root path: `/v1`, `/api/v1`, behind a proxy's prefix)."""

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{DOCS_ASSETS}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        return _page(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no online validator badge
        ))

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        return _page(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False,
        ))
