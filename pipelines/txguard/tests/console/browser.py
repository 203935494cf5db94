"""The console in a real browser (Debian's chromium, headless, driven by Playwright).

Run by tests/console.rs against a paced `txguard run` bound beyond loopback with a token:
the console first asks for the token (its data requests were refused), then every page loads
without console errors, shows what /api/v1 says, the anomalies table fills from the live
stream, a SQL error is marked at its line, and a preview returns rows. Writes a screenshot of
each page and, as JSON into RESULT, the transaction ids the anomalies table showed (the Rust
side checks they are in the Delta sink once the run has committed).

usage: browser.py URL TOKEN SCREENSHOT_DIR RESULT
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

URL, TOKEN, SHOTS, RESULT = sys.argv[1:5]
CHROMIUM = os.environ.get("TXGUARD_CHROMIUM", "/usr/bin/chromium")


def get(path, token=TOKEN):
    req = urllib.request.Request(URL + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def refused(path):
    try:
        get(path, token=None)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def wait_for(what, check, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline, then reported
            last = e
        else:
            last = None
        if time.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last error: {last})")
        time.sleep(0.25)


def main():
    # Beyond loopback with a token: no data without it.
    assert refused("/api/v1/dataflow") == 401, "a request without the token was not refused"
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

        page.goto(URL + "/#dataflow")
        page.wait_for_selector("#tokenbox", state="visible", timeout=15000)
        # The refused request is the only console error allowed (Chromium logs each 401);
        # while the box waits for the token the console does not poll (a refused request each
        # second would fill both logs).
        errors.clear()
        # (Playwright delivers the page's events only while it waits, not in time.sleep.)
        page.wait_for_timeout(2500)
        assert not errors, "the console kept polling while it waited for the token:\n" + "\n".join(errors)
        page.fill("#token", TOKEN)
        page.click("#tokenok")
        page.wait_for_selector("#tokenbox", state="hidden", timeout=15000)

        # Dataflow: every operator drawn, the same count as the API, rows moving.
        flow = get("/api/v1/dataflow")
        wait_for("the graph", lambda: page.locator("#graph g.node").count() == len(flow["nodes"]))
        text = page.inner_text("#df-sub")
        assert text.startswith(f"{len(flow['nodes'])} operators"), text
        # Rows moving: a non-zero rate on an edge.
        wait_for("per-second rates", lambda: any(
            t.endswith("/s") and t != "0/s"
            for t in page.eval_on_selector_all("#graph text", "ts => ts.map(t => t.textContent)")))
        wait_for("the thread's shares", lambda: "Pipeline thread:" in page.inner_text("#df-thread"))
        sinks = [r.split("\t")[0] for r in page.inner_text("#df-sinks tbody").splitlines()]
        assert sorted(sinks) == sorted(k["table"] for k in flow["sinks"]), sinks
        page.screenshot(path=f"{SHOTS}/console-dataflow.png", full_page=True)

        # Anomalies: rows arrive from the stream and are the API's rows.
        page.goto(URL + "/#anomalies")
        wait_for("anomaly rows", lambda: page.locator("#an-table tbody tr").count() >= 5)
        shown = page.eval_on_selector_all(
            "#an-table tbody tr", "rows => rows.map(r => r.children[0].textContent)")
        api_ids = {r["row"]["transaction_id"] for r in get("/api/v1/anomalies?limit=1000")["rows"]}
        assert set(shown) <= api_ids, (set(shown) - api_ids)
        # Filters: a score range keeps only rows inside it.
        page.fill("input[name=min_score]", "0.7")
        page.click("#an-filters button:text('Filter')")
        page.wait_for_timeout(1500)
        cols = page.eval_on_selector_all("#an-table thead th", "h => h.map(x => x.textContent)")
        si = cols.index("score")
        scores = page.eval_on_selector_all(
            "#an-table tbody tr", f"rows => rows.map(r => parseFloat(r.children[{si}].textContent))")
        assert all(s >= 0.7 for s in scores), scores
        page.click("#an-filters button:text('Clear')")
        wait_for("rows again", lambda: page.locator("#an-table tbody tr").count() >= 5)
        page.locator("#an-table tbody tr").first.click()
        wait_for("the explanation", lambda: "contribution" in page.inner_text("#an-detail"))
        page.screenshot(path=f"{SHOTS}/console-anomalies.png")

        # Dashboard: the charts draw.
        page.goto(URL + "/#dashboard")
        wait_for("the throughput chart", lambda: page.locator("#ch-rate path").count() >= 2)
        wait_for("the score histogram", lambda: page.locator("#ch-score rect").count() >= 3)
        wait_for("amounts by location", lambda: page.locator("#ch-group-1 rect").count() >= 1)
        page.wait_for_timeout(2000)
        page.screenshot(path=f"{SHOTS}/console-dashboard.png", full_page=True)

        # SQL: an error at its line, then a preview with rows.
        page.goto(URL + "/#sql")
        wait_for("the pipeline's SQL", lambda: "CREATE TABLE" in page.inner_text("#sql-text"))
        bad = "SELECT user_id,\n       amount\nFROM transactionz"
        page.fill("#ed", bad)
        page.dispatch_event("#ed", "input")
        wait_for("the error", lambda: page.locator("#diag .diag-error").count() == 1)
        diag = page.inner_text("#diag")
        assert "transactionz" in diag, diag
        assert page.locator("#ed-shadow .errline").count() == 1
        bad_pipeline = "CREATE TABLE t (a TEXT) WITH (connector = 'stdout');\nINSERT INTO t\nSELECT nope FROM t2;"
        page.fill("#ed", bad_pipeline)
        page.dispatch_event("#ed", "input")
        wait_for("the pipeline error", lambda: "line 3" in page.inner_text("#diag"))
        page.fill("#ed", "SELECT user_id, amount, category, location\nFROM transactions\nWHERE amount > 50")
        page.dispatch_event("#ed", "input")
        wait_for("a valid query", lambda: "valid query" in page.inner_text("#diag"))
        page.fill("#pv-rows", "20")
        page.click("#pv-run")
        wait_for("preview rows", lambda: page.locator("#pv-table tbody tr").count() > 0, timeout=30)
        amounts = page.eval_on_selector_all(
            "#pv-table tbody tr", "rows => rows.map(r => parseFloat(r.children[1].textContent.replace(/,/g, '')))")
        assert amounts and all(a > 50 for a in amounts), amounts
        page.screenshot(path=f"{SHOTS}/console-sql.png", full_page=True)

        # Models: the card's version and threshold, as the API has them.
        page.goto(URL + "/#models")
        models = get("/api/v1/models")["models"]
        wait_for("the model card", lambda: models[0]["model"]["version"] in page.inner_text("#model-cards"))
        assert f"{-models[0]['model']['offset']:.4f}" in page.inner_text("#model-cards")
        # The card's evaluation: its curves are drawn.
        for curve in ("#roc-curve", "#pr-curve"):
            pts = page.get_attribute(f"{curve} polyline", "points") or ""
            assert len(pts.split()) > 10, f"{curve}: {pts[:80]}"
        # Reload: the file is unchanged, and the card says so.
        assert "0 swapped · 0 refused" in page.inner_text("#model-cards")
        page.click("#reload-default")
        wait_for("the reload's outcome", lambda: "unchanged: " + models[0]["model"]["version"] in page.inner_text("#model-cards"))
        page.screenshot(path=f"{SHOTS}/console-models.png", full_page=True)

        # Dead letters: the late ones of the run, with their reason.
        page.goto(URL + "/#dead-letters")
        wait_for("dead letters", lambda: page.locator("#dl-table tbody tr").count() > 0)
        assert "late by" in page.inner_text("#dl-table")
        page.screenshot(path=f"{SHOTS}/console-dead-letters.png", full_page=True)

        page.goto(URL + "/#checkpoints")
        wait_for("checkpoints", lambda: page.locator("#cp-table tbody tr").count() > 0)
        page.screenshot(path=f"{SHOTS}/console-checkpoints.png", full_page=True)

        browser.close()
    assert not errors, "\n".join(errors)
    with open(RESULT, "w") as f:
        json.dump({"shown": shown}, f)


main()
