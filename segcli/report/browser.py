"""Open a report in headless Chromium: the DOM after load, console output, timings.

Used by the browser tests, ``bench/report.py`` (page load and sort time) and
``bench/report_screenshot.py``; segcli itself never needs a browser.  A probe script is injected
into a copy of the page: it records uncaught errors and ``console.error`` calls, then on ``load``
reads the navigation timing, clicks the case table's second column header twice (ascending,
descending), types into the filter box, and writes what it saw as JSON into ``<pre id=probe>``,
which ``--dump-dom`` returns.

    >>> page = open_page(Path("report.html"))
    >>> page.probe["load_ms"], page.console
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "PageResult", "find_chromium", "open_page", "screenshot"]

#: Flags for a quiet, offline, sandbox-free headless run (containers, CI).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)

_PROBE = """<script>
window.__probe={errors:[]};
window.addEventListener('error',function(e){__probe.errors.push(String(e.message));});
(function(){var ce=console.error;console.error=function(){
  __probe.errors.push(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);};})();
window.addEventListener('load',function(){
  var p=window.__probe;var nav=performance.getEntriesByType('navigation')[0];
  p.dom_ms=nav?nav.domContentLoadedEventEnd:null;p.load_ms=performance.now();
  var t=document.getElementById('cases');
  if(t){
    var rows=function(){return Array.prototype.map.call(t.tBodies[0].rows,function(r){
      var c=r.cells[1];return c.getAttribute('data-v');});};
    p.rows=t.tBodies[0].rows.length;var th=t.tHead.rows[0].cells[1];
    var t0=performance.now();th.click();p.sort_ms=performance.now()-t0;p.asc=rows();
    th.click();p.desc=rows();
    var box=document.querySelector('input.filter');p.filter_box=!!box;
    if(box){box.value=t.tBodies[0].rows[0].cells[0].textContent;
      box.dispatchEvent(new Event('input'));
      p.visible_after_filter=Array.prototype.filter.call(t.tBodies[0].rows,function(r){
        return r.style.display!=='none';}).length;}
  }
  var pre=document.createElement('pre');pre.id='probe';pre.textContent=JSON.stringify(p);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM``, then ``chromium``, ``chromium-browser``, ...)."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@dataclass(frozen=True)
class PageResult:
    """What Chromium saw: the DOM after load, the probe's record, every console line."""

    dom: str
    probe: dict[str, Any]
    console: list[str]
    seconds: float


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def open_page(html: Path, timeout: float = 120.0, chromium: str | None = None) -> PageResult:
    """Load a probed copy of ``html`` in headless Chromium; see the module docstring.

    Raises:
        FileNotFoundError: no Chromium found.
        RuntimeError: Chromium failed or the probe did not report.
    """
    import re
    import time

    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (apt-get install chromium)")
    text = Path(html).read_text(encoding="utf-8")
    head = text.index("<head>") + len("<head>")
    with tempfile.TemporaryDirectory(prefix="segcli-chromium-") as tmp:
        probed = Path(tmp) / "page.html"
        probed.write_text(text[:head] + _PROBE + text[head:], encoding="utf-8")
        start = time.perf_counter()
        done = _run(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp}/profile",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                probed.as_uri(),
            ],
            timeout,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    if match is None:
        raise RuntimeError("the page's load probe did not report (page did not finish loading)")
    from html import unescape

    return PageResult(done.stdout, json.loads(unescape(match.group(1))), console, seconds)


def screenshot(
    html: Path, png: Path, width: int = 1200, height: int = 1500, timeout: float = 120.0
) -> None:
    """Save a PNG of the top of ``html`` (``width`` x ``height`` CSS pixels)."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="segcli-chromium-") as tmp:
        done = _run(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp}/profile",
                f"--window-size={width},{height}",
                f"--screenshot={Path(png).resolve()}",
                Path(html).resolve().as_uri(),
            ],
            timeout,
        )
    if done.returncode != 0 or not Path(png).is_file():
        raise RuntimeError(f"chromium screenshot failed ({done.returncode}): {done.stderr[-2000:]}")
