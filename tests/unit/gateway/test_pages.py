"""The gateway's pages (gateway/pages.py, gateway/static/), in process with a stub OpenSearch.

What a browser needs from them is checked in Chromium by tests/integration/test_pages_e2e.py;
here: the routes are the gateway's own (never proxied), the security headers, no external
resource anywhere in the pages, no HTML parsing of data in the scripts, and the API-key
exemption list for the pages.
"""

from __future__ import annotations

import re
from dataclasses import replace

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.pages import STATIC_DIR, UI_PREFIX, public_paths
from lexrerank.config import get_settings
from tests.unit.gateway.stubs import StubRerankClient, opensearch_stub
from tests.unit.opensearch_stub import stub_upstream

PAGES = {f"{UI_PREFIX}/": "search.html", f"{UI_PREFIX}/ops": "ops.html"}
SCRIPTS = sorted(STATIC_DIR.glob("*.js"))


def app_with(seen: list[httpx.Request], **overrides) -> TestClient:
    settings = replace(get_settings(), opensearch_url="http://opensearch.test", **overrides)
    upstream = stub_upstream(settings, opensearch_stub(seen))
    return TestClient(create_app(settings, upstream=upstream, rerank_client=StubRerankClient()))


@pytest.mark.parametrize(("path", "name"), sorted(PAGES.items()))
def test_pages_are_served_by_the_gateway_not_proxied(path: str, name: str) -> None:
    seen: list[httpx.Request] = []
    with app_with(seen) as http:
        resp = http.get(path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        assert resp.text == (STATIC_DIR / name).read_text()
        csp = resp.headers["content-security-policy"]
        # Only this origin: the pages work without network and send nothing elsewhere.
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                          "style-src 'self'"):
            assert directive in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        # Every asset the page names is served too.
        for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', resp.text):
            got = http.get(f"{UI_PREFIX}/{asset}")
            assert got.status_code == 200, asset
    assert seen == [], "no page request may reach OpenSearch"


def test_ui_without_slash_redirects_and_unknown_assets_are_404() -> None:
    seen: list[httpx.Request] = []
    with app_with(seen) as http:
        resp = http.get(UI_PREFIX, follow_redirects=False)
        assert resp.status_code == 308 and resp.headers["location"] == f"{UI_PREFIX}/"
        assert http.get(f"{UI_PREFIX}/static/nope.js").status_code == 404
        assert http.get(f"{UI_PREFIX}/static/%2e%2e/pages.py").status_code == 404
        assert http.get(f"{UI_PREFIX}/static/..%2fpages.py").status_code == 404
        # The pages' namespace is the gateway's own: an unknown page is a 404, not proxied.
        missing = http.get(f"{UI_PREFIX}/nope")
        assert missing.status_code == 404 and "/_lexrerank/ui/ops" in missing.text
    assert seen == []


def test_no_external_resources_in_the_pages() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        # No http(s):// or protocol-relative URL at all (the SVG namespace is an identifier).
        urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
                if u != "http://www.w3.org/2000/svg"]
        assert urls == [], f"{path.name} refers to {urls}"
        assert "@import" not in text and "<iframe" not in text, path.name


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_scripts_never_parse_data_as_html(script) -> None:
    code = script.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in code, f"{script.name} uses {sink}: build DOM nodes with el()"


def test_html_has_no_inline_script_or_style() -> None:
    # The CSP forbids them, so they would silently not run.
    for name in PAGES.values():
        html = (STATIC_DIR / name).read_text()
        assert not re.search(r"<script(?![^>]*\ssrc=)", html), name
        assert "<style" not in html and " style=" not in html, name
        assert not re.search(r"\son[a-z]+=", html), f"{name} has an inline event handler"


def test_pages_load_without_a_key_by_default_and_data_needs_it() -> None:
    seen: list[httpx.Request] = []
    with app_with(seen, api_keys=("k1",)) as http:  # the default exemptions
        for path in public_paths():
            resp = http.get(path, follow_redirects=False)
            assert resp.status_code in (200, 308), path
        # The data the pages read still needs the key.
        assert http.get("/_cat/indices?format=json").status_code == 401
        assert http.get("/_cat/indices?format=json",
                        headers={"X-API-Key": "k1"}).status_code == 201  # the stub's answer


def test_public_paths_list_every_asset() -> None:
    paths = public_paths()
    for asset in STATIC_DIR.iterdir():
        if asset.suffix in (".js", ".css"):
            assert f"{UI_PREFIX}/static/{asset.name}" in paths
    assert f"{UI_PREFIX}/" in paths and f"{UI_PREFIX}/ops" in paths
