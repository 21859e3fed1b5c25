"""Live JupyterLab in headless Chromium: notebooks 03 and 04 with ``interactive = True`` run in
a real JupyterLab server and kernel, and every slider (keyboard) and dropdown of their widgets
is moved; each move must bring a new figure into the page. Screenshots go to the test's
temporary directory. What the widget callbacks compute is tested in test_widgets.py; this is
the browser side: the widgets render, the comm round trip works, the image is replaced."""
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browser import Browser, find_chromium
from conftest import REPO

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; "
                                                         ".ci/run installs it)")
CONTROLS = "document.querySelectorAll('.widget-slider, .widget-dropdown')"


def _image_of(i: int) -> str:
    """JS: the src (length and tail) of the image in control i's widget, '' while none."""
    return (f"(() => {{ const o = {CONTROLS}[{i}].closest('.widget-vbox').querySelector('.widget-output img');"
            " return o ? o.src.length + ':' + o.src.slice(-80) : ''; })()")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, demo_run):
    pytest.importorskip("websocket", reason="websocket-client (a dev dependency) is not installed")
    from jupyter_client.kernelspec import KernelSpecManager

    if "ltlab" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("the Jupyter kernel 'ltlab' is not installed (make venv installs it)")
    import nbformat

    root = tmp_path_factory.mktemp("lab")
    for name in ("03_calibration", "04_test_shift"):
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        src = cell.source.replace("interactive = False", "interactive = True")
        cell.source = re.sub(r'^run_dir = .*$', f"run_dir = {str(demo_run)!r}", src, flags=re.M)
        nbformat.write(nb, root / f"{name}.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                               "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
                               "--allow-root"], stdout=open(root / "lab.log", "w"), stderr=subprocess.STDOUT,
                              cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=5)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
        yield url, root
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("name, expect", [
    ("03_calibration", ["temperature", "tau-norm τ", "logit adjustment τ"]),
    ("04_test_shift", ["test prior", "logit prior", "EM calibration"]),
])
def test_every_control_redraws_in_live_jupyterlab(lab, name, expect, tmp_path):
    url, root = lab
    b = Browser(CHROMIUM, tmp_path / "profile", timeout=120)
    try:
        # a tall window: JupyterLab renders every cell instead of only those in view
        b.call("Emulation.setDeviceMetricsOverride", width=1280, height=6000, deviceScaleFactor=1, mobile=False)
        b.open(f"{url}/lab/tree/{name}.ipynb?reset")
        # Run > Run All Cells once the kernel is up: a restart while it still starts can leave
        # JupyterLab's kernel connection stale on a loaded machine
        b.wait_until("document.querySelector('.jp-Notebook') && document.body.innerText.includes('Idle')",
                     timeout=300, what="the notebook with an idle kernel")
        b.click(".lm-MenuBar-item", text="Run")
        b.wait_until("document.querySelector('.lm-Menu-item[data-command=\"notebook:run-all-cells\"]')",
                     what="the Run menu")
        b.click('.lm-Menu-item[data-command="notebook:run-all-cells"]')
        b.wait_until(f"{CONTROLS}.length >= {len(expect)} && document.body.innerText.includes('Idle') && "
                     "[...document.querySelectorAll('.jp-InputArea-prompt')].every(p => /\\[\\d+\\]/.test(p.textContent)"
                     " || p.textContent.trim() === '')", timeout=300, what="every cell run, the widgets shown")
        stderr = b.evaluate("[...document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
                            ".map(e => e.innerText.slice(0, 300))")
        assert stderr == [], stderr
        labels = b.evaluate(f"[...{CONTROLS}].map(e => e.querySelector('.widget-label').innerText)")
        assert labels == expect
        moved = {}
        for i, label in enumerate(labels):
            before = b.evaluate(_image_of(i))
            assert before, f"{label}: no figure before the move"
            if b.evaluate(f"{CONTROLS}[{i}].classList.contains('widget-slider')"):
                readout = f"{CONTROLS}[{i}].querySelector('.widget-readout').innerText"
                start = b.evaluate(readout)
                b.evaluate(f"{CONTROLS}[{i}].querySelector('.noUi-handle').focus()")
                b.press("ArrowRight", 39)
                if b.evaluate(readout) == start:           # at its maximum (a fitted temperature can be)
                    b.press("ArrowLeft", 37)
                value = b.evaluate(readout)
                assert value != start, f"{label}: the keyboard did not move the slider from {start}"
            else:      # the last option (or the first, when the last is chosen): never the same view
                value = b.evaluate(f"(() => {{ const s = {CONTROLS}[{i}].querySelector('select'); s.selectedIndex = "
                                   "s.selectedIndex === s.options.length - 1 ? 0 : s.options.length - 1; "
                                   "s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()")
            b.wait_until(f"(x => x !== '' && x !== {json.dumps(before)})({_image_of(i)})", timeout=60,
                         what=f"{label} -> {value}: a new figure")
            moved[label] = value
        b.screenshot(tmp_path / f"{name}.png", max_height=4000)
        print(f"screenshot: {tmp_path / f'{name}.png'}; moved {moved}")
        # JupyterLab's debugger extension logs this when a kernel has no debugger session yet
        errors = [e for e in b.errors() if "Could not restore the debugger state" not in e]
        assert errors == [], errors
    finally:
        b.close()
