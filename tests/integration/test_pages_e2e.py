"""The search and ops pages in headless Chromium (Debian's chromium + chromium-driver, Selenium)
against the real stack: a private worker and gateway (conftest ``Stack``), the real OpenSearch
and Redis, the real ``/_lexrerank/ops`` endpoint.

Screenshots are kept in ``test-artifacts/`` (search-page.png, search-page-ja.png,
search-fallback.png, ops-page.png, ops-page-jobs.png).

Chromium missing is a FAILURE that says to run ``make setup``, not a skip: these tests are the
only check of the pages, and ``make setup`` installs the browser on any Debian machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch

from tests.integration.conftest import (
    GATEWAY_INDEX,
    JAPANESE_QUERY,
    REPO,
    ServiceProcess,
    Stack,
    _wait_for,
    free_port,
    unique_index,
)

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts"
QUERY = "A minor may rescind a juridical act performed without the consent of a representative"
WAIT_S = 60
MS_TEXT = re.compile(r"^\d+(\.\d+)? (ms|s)$")


# ------------------------------------------------------------------------------------ browser


def _chromium() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver; a failure naming the fix when missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver))
                               if not p)
        pytest.fail(f"{missing} not found: run `make setup` (installs Debian's chromium and "
                    "chromium-driver for the page tests)")
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (Selenium, offline: no driver download)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run `make setup` (pip install -e '.[dev]')")
    binary, driver_path = _chromium()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach out
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(browser: Any, check: Callable[[Any], Any], what: str,
               timeout: float = WAIT_S) -> Any:
    """Poll ``check(browser)`` until truthy; fail with the page's text and console if not."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(check)
    except Exception:  # noqa: BLE001 - TimeoutException: report what the page shows
        body = browser.find_element("tag name", "body").text[:2000]
        pytest.fail(f"timed out waiting for {what}; page text:\n{body}\n"
                    f"console: {browser.get_log('browser')}")


def screenshot(browser: Any, name: str) -> Path:
    """Save a screenshot of the whole page under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(900, min(int(height) + 40, 6000)))
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    browser.set_window_size(1280, 1600)
    return path


def console_errors(browser: Any) -> list[dict[str, Any]]:
    """Console errors since the last call (CSP violations and script errors show up here)."""
    return [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


def squash(text: str) -> str:
    """Whitespace-normalised text (the browser renders runs of spaces as one)."""
    return " ".join(text.split())


def css(browser: Any, selector: str) -> list[Any]:
    return browser.find_elements("css selector", selector)


def open_search_page(browser: Any, base: str, index: str) -> None:
    browser.get(f"{base}/_lexrerank/ui/")
    wait_until(browser, lambda b: b.execute_script("return document.body.dataset.ready === '1'"
                                                   ) or not css(b, "#error[hidden]"),
               "the index list")
    assert css(browser, "#error[hidden]"), css(browser, "#error")[0].text
    values = [o.get_attribute("value") for o in css(browser, "#index option")]
    assert index in values, values


def run_page_search(browser: Any, query: str, index: str, reranker: str, size: int,
                    window: int) -> None:
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#index")[0]).select_by_value(index)
    Select(css(browser, "#reranker")[0]).select_by_value(reranker)
    for field, value in (("#query", query), ("#size", str(size)), ("#window", str(window))):
        box = css(browser, field)[0]
        box.clear()
        box.send_keys(value)
    browser.execute_script("document.getElementById('results').replaceChildren()")
    css(browser, "#search-button")[0].click()
    wait_until(browser, lambda b: css(b, "#results li") or not css(b, "#error[hidden]"),
               "search results")
    assert css(browser, "#error[hidden]"), css(browser, "#error")[0].text


def gateway_search(url: str, index: str, query: str, reranker: str, size: int,
                   window: int) -> dict[str, Any]:
    """The request the page sends, sent directly: the reference the DOM must agree with."""
    body: dict[str, Any] = {"size": size, "_source": {"excludes": ["vectors"]},
                            "query": {"multi_match": {"query": query, "type": "most_fields",
                                                      "fields": ["content", "content.bigram"]}}}
    params = {}
    if reranker != "none":
        params = {"search_pipeline": "lexrerank"}
        body["ext"] = {"rerank": {"query_context": {"query_text": query}, "model": reranker,
                                  "window_size": window, "explain": True}}
    resp = httpx.post(f"{url}/{index}/_search", params=params, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


# ------------------------------------------------------------------------------------ search


def test_search_page_shows_reranked_hits_with_evidence(stack: Stack, browser: Any,
                                                       gateway_model: str) -> None:
    if gateway_model != "paraformer":
        pytest.skip("the page offers the shipped model names; shipped Paraformer weights absent")
    open_search_page(browser, stack.url, GATEWAY_INDEX)
    options = [o.get_attribute("value") for o in css(browser, "#index option")]
    assert not [o for o in options if o.startswith(".")], f"system indexes listed: {options}"
    assert f"{GATEWAY_INDEX}-default" in options, "aliases are listed too"

    run_page_search(browser, QUERY, GATEWAY_INDEX, "paraformer", size=5, window=20)
    wait_until(browser, lambda b: len(css(b, "#results li.hit")) == 5, "5 hits")
    expected = gateway_search(stack.url, GATEWAY_INDEX, QUERY, "paraformer", 5, 20)
    assert expected["ext"]["rerank"]["status"] == "ok", expected["ext"]
    assert css(browser, "#rerank-status")[0].text == "ok"
    assert css(browser, "#fallback[hidden]"), "no fallback notice when reranking worked"
    assert css(browser, "#model-version")[0].text == expected["ext"]["rerank"]["model_version"]

    hits = css(browser, "#results li.hit")
    assert [h.get_attribute("data-id") for h in hits] == [
        h["_id"] for h in expected["hits"]["hits"]], "the page shows the gateway's order"
    marks_seen = 0
    for position, (element, hit) in enumerate(zip(hits, expected["hits"]["hits"], strict=True),
                                              start=1):
        rerank = hit["_rerank"]
        shown = element.find_element("css selector", ".first-stage-rank")
        assert shown.get_attribute("data-rank") == str(rerank["first_stage_rank"])
        assert shown.text == f"BM25 #{rerank['first_stage_rank']}"
        assert element.find_element("css selector", ".rank").text == f"#{position}"
        move = element.find_element("css selector", ".rank-move").text
        delta = rerank["first_stage_rank"] - position
        assert move == (f"▲ {delta}" if delta > 0 else f"▼ {-delta}" if delta < 0 else "=")
        if hit["_source"].get("caption"):
            assert squash(element.find_element("css selector", ".caption").text) == \
                squash(hit["_source"]["caption"])
        marks = element.find_elements("css selector", "mark.evidence")
        evidence = {e["sentence_index"]: e for e in rerank["evidence"]}
        assert len(marks) == len(evidence), (hit["_id"], len(marks), evidence)
        for mark in marks:
            index = int(mark.get_attribute("data-sentence-index"))
            weight = float(mark.get_attribute("data-weight"))
            assert 0 < weight <= 1
            assert weight == pytest.approx(evidence[index]["weight"], abs=1e-4)
            assert squash(mark.text) == squash(evidence[index]["sentence"])
        # Stronger sentences are shaded more: the shade (CSS variable --w) follows the weight,
        # the article's strongest sentence fully shaded.
        shades = [(float(m.get_attribute("data-weight")), float(browser.execute_script(
            "return getComputedStyle(arguments[0]).getPropertyValue('--w')", m))) for m in marks]
        if shades:
            assert max(shades)[1] == pytest.approx(1.0)
            assert [w for w, _ in sorted(shades, key=lambda p: p[1])] == sorted(
                w for w, _ in shades)
        marks_seen += len(marks)
        # Every sentence of the article is shown, marked or not.
        shown_sentences = element.find_elements("css selector", ".article-text .sentence")
        assert len(shown_sentences) == len(hit["_source"]["sentences"])
    assert marks_seen > 0, "the attention selected no evidence sentence in 5 hits"

    took = {row.get_attribute("data-stage"): row.find_element("css selector", ".num").text
            for row in css(browser, "#timings tr[data-stage]")}
    assert {"first_stage", "rerank", "merge", "total", "worker", "browser"} <= set(took), took
    assert all(MS_TEXT.match(v) for v in took.values()), took
    assert not console_errors(browser)
    path = screenshot(browser, "search-page.png")
    assert path.stat().st_size > 10_000


def test_search_page_reranks_japanese_with_evidence(stack: Stack, browser: Any,
                                                   japanese_gateway_index: str) -> None:
    index = japanese_gateway_index
    for _ in range(20):  # the worker loads the Japanese models on first use
        expected = gateway_search(stack.url, index, JAPANESE_QUERY, "default", 3, 20)
        if expected["ext"]["rerank"]["status"] == "ok":
            break
        time.sleep(3)
    assert expected["ext"]["rerank"]["status"] == "ok", expected["ext"]
    open_search_page(browser, stack.url, index)
    run_page_search(browser, JAPANESE_QUERY, index, "default", size=3, window=20)
    wait_until(browser, lambda b: len(css(b, "#results li.hit")) == 3, "3 hits")
    assert css(browser, "#rerank-status")[0].text == "ok"
    hits = css(browser, "#results li.hit")
    assert [h.get_attribute("data-id") for h in hits] == [
        h["_id"] for h in expected["hits"]["hits"]]
    assert hits[0].get_attribute("data-id") == "5"
    marks = [m.text for h in hits for m in h.find_elements("css selector", "mark.evidence")]
    sentences = {squash(e["sentence"]) for h in expected["hits"]["hits"]
                 for e in h["_rerank"]["evidence"]}
    assert marks and {squash(m) for m in marks} == sentences
    assert "未成年者" in hits[0].find_element("css selector", ".caption").text
    assert not console_errors(browser)
    screenshot(browser, "search-page-ja.png")


@pytest.fixture(scope="module")
def untrusted_index(client: OpenSearch) -> Iterator[str]:
    """An index whose articles hold HTML, and no article vectors (reranking falls back)."""
    name = unique_index("test-pages-untrusted")
    client.indices.delete(index=name, ignore_unavailable=True)
    client.index(index=name, id="x1", refresh=True, body={
        "caption": '<img id="injected-caption" src="x">',
        "sentences": ['zebra crossing <b id="injected-sentence">bold</b>',
                      "<script>document.title = 'pwned'</script>"],
        "content": "zebra crossing rules <img id=injected-content src=x>"})
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


def test_search_page_escapes_article_text_and_shows_fallback(stack: Stack, browser: Any,
                                                             untrusted_index: str) -> None:
    open_search_page(browser, stack.url, untrusted_index)
    run_page_search(browser, "zebra crossing", untrusted_index, "paraformer", size=5,
                    window=10)
    wait_until(browser, lambda b: css(b, "#results li.hit"), "the hit")
    expected = gateway_search(stack.url, untrusted_index, "zebra crossing", "paraformer", 5, 10)
    info = expected["ext"]["rerank"]
    assert info["status"] == "fallback", info  # this index has no article vectors
    notice = css(browser, "#fallback")[0]
    assert notice.is_displayed()
    assert "fell back" in notice.text
    assert notice.find_element("css selector", ".reason").text == info["reason"]
    assert css(browser, "#rerank-status")[0].text == "fallback"
    # Article text is shown as text, never parsed as HTML.
    for injected in ("injected-caption", "injected-sentence", "injected-content"):
        assert not css(browser, f"#{injected}"), f"{injected} became an element"
    hit = css(browser, "#results li.hit")[0]
    caption = hit.find_element("css selector", ".caption").text
    assert caption == '<img id="injected-caption" src="x">'
    assert "<b id=\"injected-sentence\">bold</b>" in hit.text
    assert browser.title != "pwned"
    assert not hit.find_elements("css selector", "mark.evidence"), "no evidence in a fallback"
    assert not console_errors(browser)
    screenshot(browser, "search-fallback.png")


def test_search_page_sends_the_api_key(browser: Any, tmp_path: Path) -> None:
    """With API keys on, the page loads without a key, says a key is needed, then uses it."""
    key = f"test-key-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The default exemptions open the pages' files (LEXRERANK_AUTH_EXEMPT_PATHS unset).
    env = {k: v for k, v in os.environ.items() if k != "LEXRERANK_AUTH_EXEMPT_PATHS"}
    env.update({"HF_HUB_OFFLINE": "1", "LEXRERANK_API_KEYS": key})
    gateway = ServiceProcess("gateway", [sys.executable, "-m", "lexrerank", "serve",
                                         "--port", str(port), "--log-level", "warning"],
                             env, tmp_path / "gateway-auth.log")
    gateway.start()
    try:
        _wait_for(lambda: _answers(f"{url}/_lexrerank/health"), "gateway", gateway.proc,
                  gateway.log, 60)
        assert httpx.get(f"{url}/_cat/indices", timeout=10).status_code == 401
        browser.get(f"{url}/_lexrerank/ui/")
        browser.execute_script("localStorage.removeItem('lexrerank.apiKey')")
        browser.refresh()
        wait_until(browser, lambda b: not css(b, "#error[hidden]"), "the missing-key error")
        error = css(browser, "#error")[0].text
        assert "401" in error and "API key" in error, error
        field = css(browser, "#api-key")[0]
        field.send_keys(key)
        browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)
        wait_until(browser, lambda b: len(css(b, "#index option")) > 0, "indexes with the key")
        assert browser.execute_script("return localStorage.getItem('lexrerank.apiKey')") == key
        index = css(browser, "#index option")[0].get_attribute("value")
        run_page_search(browser, "contract", index, "none", size=3, window=10)
        wait_until(browser, lambda b: css(b, "#results li"), "plain search results")
        assert css(browser, "#error[hidden]")
    finally:
        gateway.stop()
        with contextlib.suppress(Exception):  # the page may never have loaded
            browser.execute_script("localStorage.removeItem('lexrerank.apiKey')")
        browser.get_log("browser")  # the expected 401s are this test's, not the next one's


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


# ------------------------------------------------------------------------------------ ops


def _counter(browser: Any, name: str) -> int | None:
    text = css(browser, f"#c-{name}")[0].text
    return int(text) if text.isdigit() else None


def test_ops_page_updates_with_searches(stack: Stack, browser: Any, gateway_service) -> None:
    browser.get(f"{stack.url}/_lexrerank/ui/ops")
    wait_until(browser, lambda b: _counter(b, "reranked") is not None
               or not css(b, "#ops-error[hidden]"), "the first poll of /_lexrerank/ops")
    assert css(browser, "#ops-error[hidden]"), css(browser, "#ops-error")[0].text
    before = _counter(browser, "reranked")
    samples_before = int(css(browser, "#sample-count")[0].text)

    searches = 6
    for i in range(searches):
        body = {"size": 3, "query": {"match": {"content": f"{QUERY} {i}"}},
                "ext": {"rerank": {"query_context": {"query_text": f"{QUERY} {i}"},
                                   "window_size": 10}}}
        resp = httpx.post(f"{stack.url}/{GATEWAY_INDEX}/_search",
                          params={"search_pipeline": "lexrerank"}, json=body, timeout=30)
        assert resp.status_code == 200, resp.text
    wait_until(browser, lambda b: (_counter(b, "reranked") or 0) >= before + searches,
               f"the reranked counter to grow by {searches}")
    assert int(css(browser, "#sample-count")[0].text) > samples_before
    wait_until(browser, lambda b: int(css(b, "#chart-latency")[0].get_attribute(
        "data-samples")) >= samples_before + 3, "three more samples")
    # The latency chart draws the searches just made; p95 is a number in ms.
    legend = {e.get_attribute("data-series"): int(e.get_attribute("data-points"))
              for e in css(browser, "#chart-latency .legend-item")}
    assert set(legend) == {"p50", "p95", "p99"} and legend["p95"] >= 1, legend
    assert css(browser, "#chart-latency polyline, #chart-latency circle")
    assert re.match(r"^\d+(\.\d+)? ms$", css(browser, "#c-p95")[0].text)
    queues = {e.get_attribute("data-series") for e in css(browser, "#chart-queues .legend-item")}
    assert {"rerank", "embed"} <= queues, queues
    # This stack's worker is listed with the model version of the index's vectors.
    rows = {r.get_attribute("data-worker"): r for r in css(browser, "#workers tbody tr")
            if r.get_attribute("data-worker")}
    mine = [r for name, r in rows.items() if name and name.startswith(stack.node)]
    assert mine, f"worker {stack.node} not in {list(rows)}"
    assert mine[0].find_element("css selector", ".model-version").text == \
        gateway_service.model_version
    assert not console_errors(browser)
    screenshot(browser, "ops-page.png")


class _FakeOps:
    """A gateway stand-in for what the real stack cannot show on demand: a running reindex
    job and an ops endpoint that fails. Serves the real pages (gateway.pages)."""

    def __init__(self) -> None:
        from fastapi import FastAPI
        from starlette.responses import JSONResponse

        from gateway.pages import add_pages

        self.failing = False
        self.polls = 0
        app = FastAPI()

        @app.get("/_lexrerank/ops")
        async def ops() -> JSONResponse:
            self.polls += 1
            if self.failing:
                return JSONResponse({"error": {"type": "unavailable", "reason": "redis down"}},
                                    status_code=503)
            now = time.time()
            return JSONResponse({
                "time": now,
                "gateway": {"requests": 10 * self.polls, "reranked": 8 * self.polls,
                            "fallbacks": self.polls, "fallback_rate": 0.125,
                            "latency_ms": {"p50": 40.0 + self.polls, "p95": 80.0, "p99": 95.5},
                            "fallbacks_by_reason": {"timeout": self.polls}},
                "queues": {"rerank": self.polls % 3, "embed": 120},
                "workers": [{"name": "gpu-0@host", "queues": ["rerank"], "model": "paraformer",
                             "model_version": "abc123", "device": "cuda:0", "ok": True}],
                "reindex_jobs": [{"alias": "statutes", "index": "statutes-v2",
                                  "models": ["paraformer"], "state": "embedding",
                                  "documents_total": 768, "documents_loaded": 768,
                                  "chunks_total": 16, "chunks_done": 4, "chunks_failed": 1,
                                  "started_at": now - 60, "updated_at": now, "eta_s": 125,
                                  "error": None}],
                "errors": []})

        add_pages(app)
        self.app = app


@pytest.fixture()
def fake_ops() -> Iterator[tuple[str, _FakeOps]]:
    import uvicorn

    fake = _FakeOps()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "fake ops server did not start"
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_ops_page_shows_reindex_progress_and_endpoint_errors(browser: Any, fake_ops) -> None:
    url, fake = fake_ops
    browser.get(f"{url}/_lexrerank/ui/ops")
    wait_until(browser, lambda b: css(b, "#reindex-jobs tr.job"), "the reindex job")
    job = css(browser, "#reindex-jobs tr.job")[0]
    assert job.get_attribute("data-state") == "embedding"
    bars = job.find_elements("css selector", "progress")
    assert [(b.get_attribute("value"), b.get_attribute("max")) for b in bars] == [
        ("768", "768"), ("4", "16")]
    assert "1 failed" in job.text
    assert job.find_element("css selector", ".eta").text == "2 min 5 s"
    assert css(browser, "#fallback-reasons tbody td")[0].text == "timeout"
    assert css(browser, "#workers tbody tr")[0].get_attribute("data-worker") == "gpu-0@host"
    wait_until(browser, lambda b: int(css(b, "#chart-latency")[0].get_attribute(
        "data-samples")) >= 2, "two samples")
    assert css(browser, "#c-fallback-rate")[0].text == "12.5 %"
    screenshot(browser, "ops-page-jobs.png")

    fake.failing = True
    wait_until(browser, lambda b: not css(b, "#ops-error[hidden]"), "the error banner", 10)
    text = css(browser, "#ops-error")[0].text
    assert "503" in text and "redis down" in text, text
    # The charts keep the samples they had.
    assert int(css(browser, "#chart-latency")[0].get_attribute("data-samples")) >= 2
    fake.failing = False
    wait_until(browser, lambda b: css(b, "#ops-error[hidden]"), "the banner to clear", 10)
