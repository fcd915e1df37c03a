"""The cross-site attack of issue 10 §1 in a real browser: a page on another origin (another port
of 127.0.0.1) makes headless Chromium POST to the standalone server without a preflight (a Blob
body, so no Content-Type; a text/plain one) with ``overwrite: true``, and open the gradio queue.
The victim file stays byte-identical. Skips without playwright or Debian's chromium.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import urllib.request

import pytest
import torch

import lora_factory as F

from standalone_server import CHROMIUM, FLAGS, start, stop

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


ATTACK = """<!doctype html><html><body><script>
const target = %(target)s, body = JSON.stringify(%(body)s);
window.results = [];
async function go() {
  for (const init of [{method: "POST", mode: "no-cors", body: new Blob([body])},
                      {method: "POST", mode: "no-cors", body: body},
                      {method: "POST", mode: "no-cors", body: body, headers: {"Content-Type": "text/plain"}}]) {
    try { await fetch(target + "nplora/v1/fuse", init); window.results.push("sent"); }
    catch (e) { window.results.push("error " + e); }
  }
  await new Promise(done => {
    const ws = new WebSocket(target.replace("http", "ws") + "queue/join");
    ws.onmessage = m => { window.results.push("ws message " + m.data); ws.close(); done(); };
    ws.onerror = () => { window.results.push("ws refused"); done(); };
    ws.onclose = () => done();
  });
  window.finished = true;
}
go();
</script></body></html>"""


@pytest.fixture
def servers(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    rows = F.select("sd1", "attn", ("unet",))[:8]
    for name, seed in (("dog", 1), ("ink", 2), ("victim", 3)):
        F.make_lora(folder / f"{name}.safetensors", "sd1", rows, rank=2, seed=seed, dtype=torch.float16)
    proc, target = start(folder)
    page = ATTACK % {"target": json.dumps(target),
                     "body": json.dumps({"content": "dog", "style": "ink", "name": "victim", "overwrite": True})}

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        yield folder, f"http://127.0.0.1:{evil.server_address[1]}/", target
    finally:
        evil.shutdown()
        stop(proc)


def test_a_foreign_page_in_a_real_browser_cannot_overwrite_a_lora(servers):
    folder, attacker, target = servers
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(attacker)
            page.wait_for_function("window.finished === true", timeout=60000)
            results = page.evaluate("window.results")
        finally:
            browser.close()
    assert results[:3] == ["sent", "sent", "sent"]  # the browser did send them (opaque answers)
    assert not any(r.startswith("ws message") for r in results)  # the queue never talked to the page
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # and the same body from a script (no Origin) still works: the server was up and able to act
    req = urllib.request.Request(target + "nplora/v1/fuse", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"content": "dog", "style": "ink", "name": "victim",
                                                  "overwrite": True}).encode())
    with urllib.request.urlopen(req, timeout=600) as r:
        assert r.status == 200
    assert (folder / "victim.safetensors").read_bytes() != before["victim.safetensors"]
