"""The API documentation pages load only what this server serves: pinned copies of Redoc
and Swagger UI from the package, never a script, a style or a font from a CDN."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.web import api_docs

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["/api/schema", "/api/schema/redoc", "/api/schema/swagger"]


def references(html: str) -> list[str]:
    """Every address a page makes the browser load or read."""
    return re.findall(r'\b(?:src|href|spec-url|data-spec-url)="([^"]*)"', html)


@pytest.mark.parametrize("page", PAGES)
def test_a_docs_page_loads_only_what_this_server_serves(client: TestClient[Any], page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    found = references(html)
    assert found, "the page loads nothing?"
    for address in found:
        if address == "data:,":  # the empty favicon
            continue
        assert address.startswith("/api/schema/") and not address.startswith("//"), address
        loaded = client.get(address)
        assert loaded.status_code == 200, address
        assert len(loaded.content) > 400, address
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy


def test_the_pages_load_the_pinned_files(client: TestClient[Any]) -> None:
    redoc = client.get("/api/schema").text
    assert references(redoc) == [
        "data:,",
        "/api/schema/openapi.json",
        "/api/schema/assets/redoc.standalone.js",
    ]
    swagger = client.get("/api/schema/swagger").text
    assert references(swagger) == [
        "data:,",
        "/api/schema/assets/swagger-ui.css",
        "/api/schema/assets/swagger-ui-bundle.js",
        "/api/schema/assets/swagger-init.js",
        "/api/schema/openapi.json",
    ]
    script = client.get("/api/schema/assets/redoc.standalone.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    style = client.get("/api/schema/assets/swagger-ui.css")
    assert style.headers["content-type"].startswith("text/css")


def test_the_description_is_at_its_documented_path(client: TestClient[Any]) -> None:
    described = client.get("/api/schema/openapi.json")
    assert described.status_code == 200
    document = described.json()
    assert document["info"]["title"] == "Parcours" and document["openapi"].startswith("3.")
    assert "/api/journeys/{journey_id}" in document["paths"]
    assert "openapi: 3." in client.get("/api/schema/openapi.yaml").text
    assert "/api/schema/openapi.json" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    "path",
    [
        "/api/schema/assets/app.py",
        "/api/schema/assets/..%2Fapi_docs.py",
        "/api/schema/assets/README.md",
        "/api/schema/rapidoc",  # Litestar's CDN pages are not served
        "/api/schema/elements",
    ],
)
def test_nothing_else_is_served_there(client: TestClient[Any], path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_vendored_files_are_the_recorded_ones_with_their_licences() -> None:
    record = (api_docs.ASSETS_DIR / "README.md").read_text(encoding="utf-8")
    for name in api_docs.ASSETS:
        if name == "swagger-init.js":  # Parcours' own
            continue
        digest = hashlib.sha256((api_docs.ASSETS_DIR / name).read_bytes()).hexdigest()
        assert f"| `{name}` |" in record and digest in record, name
    for package, version in api_docs.VERSIONS.items():
        assert f"`{package}@{version}`" in record
    for licence in ("redoc-LICENSE", "swagger-ui-LICENSE", "swagger-ui-NOTICE"):
        assert (api_docs.ASSETS_DIR / licence).stat().st_size > 40
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "web/api_docs_assets/*" in setuptools["package-data"]["parcours"]
