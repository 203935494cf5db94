"""What the web console costs the pipeline: the default pipeline, unpaced, with the console off
(`--no-ui`) and with it on and four browser tabs open on it (Dataflow, Anomalies with its live
stream, Dashboard, Models; Debian's chromium, headless, driven by Playwright), in turns, and
the throughput of each as `txguard run` reports it at its end ("done in … s: N events").
The browser shares the machine's cores with the pipeline, as it would on a laptop.

usage: python3 pipelines/txguard/benches/console_tabs.py [--txguard PATH] [--count N]
       [--repeats R] [--tabs T]
(default: the release build in ~/.cache/txguard/target-release, 3 000 000 transactions,
3 turns, 4 tabs). Prints each run's rate and the medians.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading

from playwright.sync_api import sync_playwright

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../.."))
PAGES = ["dataflow", "anomalies", "dashboard", "models", "dead-letters", "sql"]


def run(txguard, count, ui, on_address=None):
    """One run in a fresh folder; its rate (transactions/s)."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [txguard, "run", os.path.join(REPO, "sql/pipeline.sql"),
               "--model", os.path.join(REPO, "models/default.json"),
               "--quiet", "--no-checkpoints", "--set", f"transactions.count={count}"]
        cmd += ["--ui", "127.0.0.1:0"] if ui else ["--no-ui"]
        p = subprocess.Popen(cmd, cwd=d, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        done = None
        for line in p.stderr:
            m = re.match(r"web UI: http://([^/]+)/", line)
            if m and on_address:
                on_address(m.group(1))
            m = re.match(r"done in ([0-9.]+) s: ([0-9]+) events", line)
            if m:
                done = int(m.group(2)) / float(m.group(1))
        p.wait()
        if p.returncode != 0 or done is None:
            sys.exit(f"txguard run failed ({p.returncode})")
        return done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--txguard", default=os.path.expanduser("~/.cache/txguard/target-release/release/txguard"))
    ap.add_argument("--count", type=int, default=3_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tabs", type=int, default=4)
    a = ap.parse_args()
    off, on = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=os.environ.get("TXGUARD_CHROMIUM", "/usr/bin/chromium"),
                                     args=["--no-sandbox"])
        for i in range(a.repeats):
            off.append(run(a.txguard, a.count, ui=False))
            print(f"turn {i + 1}: --no-ui {off[-1]:,.0f} tx/s", flush=True)
            pages = []
            opened = threading.Event()
            address = []

            def at(addr):
                address.append(addr)
                opened.set()

            result = []
            t = threading.Thread(target=lambda: result.append(run(a.txguard, a.count, ui=True, on_address=at)))
            t.start()
            opened.wait(60)
            ctx = browser.new_context()
            for k in range(a.tabs):
                page = ctx.new_page()
                page.goto(f"http://{address[0]}/#{PAGES[k % len(PAGES)]}", wait_until="domcontentloaded")
                pages.append(page)
            # Keep the tabs' timers and streams running until the run ends.
            while t.is_alive():
                if pages:
                    pages[0].wait_for_timeout(200)
                else:
                    t.join(0.2)
            t.join()
            ctx.close()
            on.append(result[0])
            print(f"turn {i + 1}: console + {a.tabs} tabs {on[-1]:,.0f} tx/s", flush=True)
        browser.close()
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"median --no-ui {m_off:,.0f} tx/s; median with the console and {a.tabs} tabs {m_on:,.0f} tx/s "
          f"({100 * (m_on - m_off) / m_off:+.1f}%)")


main()
