"""The batch index, a run page and an analysis page opened in headless Chromium: no console
errors, every image decodes, the leaderboard shows the runs' numbers. Screenshots are saved
in the test's temporary directory (printed with -s) for a look."""
import json
import re

import numpy as np
import pytest
import yaml
from browser import Browser, find_chromium
from conftest import REPO, tiny_folder

from ltlab.reports.batch import run_batch

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; "
                                                         ".ci/run installs it)")

IMAGES = """[...document.images].map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0}))"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    import os

    pytest.importorskip("websocket", reason="websocket-client (a dev dependency) is not installed")
    root = tmp_path_factory.mktemp("browser")
    spec = {"name": "web", "notebook": str(REPO / "notebooks" / "01_train.ipynb"),
            "parameters": {"dataset": "folder", "data_root": str(tiny_folder(root / "tiny")), "epochs": 1,
                           "device": "cpu", "batch_size": 16, "eval_every": 1},
            "grid": {"method": ["ce"], "seed": [0, 1]},
            "analysis": [str(REPO / "notebooks" / "03_calibration.ipynb")]}
    (root / "exp.yaml").write_text(yaml.safe_dump(spec))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        index = run_batch(root / "exp.yaml", reports=str(root / "reports"))
    finally:
        os.chdir(cwd)
    return root, index


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def _check(browser, page, shot, figures=True):
    browser.open(page.as_uri())
    assert browser.errors() == []
    images = browser.evaluate(IMAGES)
    assert all(i["ok"] for i in images) and (images or not figures), images   # the landing page has none
    browser.screenshot(shot)
    print(f"screenshot: {shot}")
    return browser.evaluate("document.body.innerText")


def test_pages_in_chromium(batch, browser, tmp_path):
    root, index = batch
    out = index.parent
    text = _check(browser, index, tmp_path / "index.png")
    # the leaderboard: mean ± std over the two seeds of every number, as the summaries give them
    summaries = [json.loads((root / "runs" / "web" / f"method-ce_seed-{s}" / "summary.json").read_text())
                 for s in (0, 1)]
    for key in ("top1", "balanced_acc", "medium", "few", "ece", "auroc_msp"):
        if any(s[key] is None for s in summaries):      # a group the tiny folder does not have
            continue
        v = [100 * s[key] for s in summaries]
        assert f"{np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}" in text, key
    assert re.search(r"\bce\s+2\b", text)                     # one configuration, n = 2
    run_text = _check(browser, out / "method-ce_seed-0.html", tmp_path / "run.png")
    assert f"{100 * summaries[0]['top1']:.1f}" in run_text and "reproduce" in run_text
    calib = _check(browser, out / "method-ce_seed-0__03_calibration.html", tmp_path / "calibration.png")
    assert "temperature" in calib.lower()
    landing = _check(browser, out.parent / "index.html", tmp_path / "landing.png", figures=False)
    assert "web" in landing
