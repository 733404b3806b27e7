"""The web UI in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`; `.ci/run` installs it) against a live `lmadapt serve` with a key and a runs root.

It types the key, sends a chat message and watches the answer stream in (the text changes several times),
opens a run and sees its plot load, switches to 中文, and screenshots every tab (to the test's folder, or
to $LMADAPT_UI_SCREENSHOTS, e.g. docs/). No browser: the test fails and says how to install one, unless
LMADAPT_NO_BROWSER=1 asks to skip it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from test_serve import KEY, free_port, start_server
from tiny_lm import save_tiny

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def make_run(root: Path) -> Path:
    """A complete finetune run folder as a stage writes it: config, status, metrics, a real loss plot."""
    from lmadapt.plots import save_loss_curve

    run = root / "demo" / "runs" / "lora"
    (run / "plots").mkdir(parents=True)
    history = [{"split": "train", "step": s, "loss": 1.0 / s} for s in range(1, 20)]
    history += [{"split": "eval", "step": s, "loss": 1.2 / s, "f1_macro": 0.5 + s / 50} for s in (5, 10, 15)]
    save_loss_curve(run / "plots" / "loss.png", history, "f1_macro")
    (run / "config.yaml").write_text("model:\n  name: minilm-l6\nstage: finetune\nmethod:\n  type: lora\n")
    (run / "status.json").write_text(json.dumps({"stage": "finetune", "status": "complete"}))
    final = {"test": {"accuracy": 0.93, "f1_macro": 0.929}}
    (run / "metrics.json").write_text(json.dumps({"final": final, "history": history, "cost": {}}))
    board = {"metric": "f1_macro", "rows": [{"name": "lora", "method": "lora", "f1_macro": 0.929}]}
    (root / "demo" / "leaderboard.json").write_text(json.dumps(board))
    shutil.copy(run / "plots" / "loss.png", root / "demo" / "leaderboard.png")
    evil = root / "evil"  # a crafted leaderboard: its metric and row names are markup that would run script
    evil.mkdir()
    (evil / "leaderboard.json").write_text(json.dumps({"metric": XSS, "rows": [
        {"name": XSS, "method": "<script>window.pwned = 1</script>", XSS: 0.5}]}))  # fmt: skip
    return root


XSS = '<img src=x onerror="window.pwned = 1; alert(1)">'


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("LMADAPT_NO_BROWSER") == "1":
        pytest.skip("LMADAPT_NO_BROWSER=1: the browser test was asked not to run")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install it (`apt-get install chromium fonts-wqy-microhei`, which "
            ".ci/run does) or set LMADAPT_NO_BROWSER=1 to skip this test knowingly"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            b = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
        except Exception as exc:  # a browser that is there but cannot start: say so, do not pass
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {exc}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    tiny = save_tiny(tmp / "tiny")
    root = Path(os.environ.get("LMADAPT_UI_RUNS_ROOT") or make_run(tmp / "runs"))
    port = free_port()
    proc = start_server([f"tiny={tiny}", "--api-key", KEY, "--runs-root", str(root)], port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(30)


def wait_until(page, expression: str, timeout_ms: int = 30_000) -> None:
    """Poll `expression` through DevTools evaluation: the page's CSP forbids eval, so Playwright's own
    wait_for_function (which evals its predicate in the page) cannot run there, and the CSP stays on."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_ms} ms: {expression}")
        time.sleep(0.1)


def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("LMADAPT_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_chat_streams_runs_show_plots_and_labels_switch_language(browser, ui, tmp_path):
    out = shots(tmp_path)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(ui)
    page.fill("#key", KEY)
    page.dispatch_event("#key", "change")
    wait_until(page, "document.querySelector('#model').options.length > 0")
    assert page.input_value("#model") == "tiny"
    page.fill("#system", "you are a helpful bot")
    page.fill("#max_tokens", "40")
    # count the distinct texts the answer shows while it streams in
    page.evaluate("""() => { window.seen = new Set(); new MutationObserver(() => {
        const t = document.querySelector('#messages .assistant:last-child .text');
        if (t) window.seen.add(t.textContent); }).observe(document.querySelector('#messages'),
        {subtree: true, childList: true, characterData: true}); }""")
    page.fill("#prompt", "hello how are you today?")
    page.click("#send")
    wait_until(page, "!document.querySelector('#send').disabled", 60_000)
    answer = page.text_content("#messages .assistant:last-child .text")
    assert answer and page.text_content("#chat-error") == ""
    assert page.evaluate("window.seen.size") >= 3  # it appeared piece by piece, not at once
    assert page.text_content("#messages .user .text") == "hello how are you today?"
    page.screenshot(path=str(out / "ui-chat.png"))

    page.click("nav button[data-tab=runs]")
    page.wait_for_selector("#run-table tbody tr")
    page.click("#run-table tbody tr")
    wait_until(
        page,
        "[...document.querySelectorAll('#plots img.plot')].some(i => i.complete && i.naturalWidth > 100)",
    )
    wait_until(page, "document.querySelector('#recipe').textContent.includes('stage')")
    assert "f1_macro" in page.text_content("#metric-table")
    wait_until(page, "[...document.querySelectorAll('#boards img.plot')].some(i => i.naturalWidth > 100)")
    page.screenshot(path=str(out / "ui-runs.png"), full_page=True)
    # the crafted leaderboard shows its names as text: no element was made from them, no script ran
    headers = page.eval_on_selector_all("#boards th", "ths => ths.map(t => t.textContent)")
    cells = page.eval_on_selector_all("#boards td", "tds => tds.map(t => t.textContent)")
    assert XSS in headers and XSS in cells and "<script>window.pwned = 1</script>" in cells
    assert page.eval_on_selector_all("#boards img:not(.plot), #boards script", "els => els.length") == 0
    assert page.evaluate("window.pwned") is None and not dialogs

    page.click("nav button[data-tab=predict]")
    wait_until(page, "document.querySelector('#predict-run').options.length > 0")
    page.click("#lang")
    assert page.text_content("nav button[data-tab=chat]") == "对话"
    assert page.text_content("nav button[data-tab=predict]") == "批量预测"
    page.screenshot(path=str(out / "ui-predict-zh.png"))
    page.click("#lang")
    assert page.text_content("nav button[data-tab=chat]") == "Chat"


def test_the_ui_obeys_the_key(browser, ui):
    page = browser.new_page()
    page.goto(ui)
    page.fill("#key", "wrong-key-0000000")
    page.dispatch_event("#key", "change")
    wait_until(page, "document.querySelector('#chat-error').textContent.length > 0")
    assert "API key" in page.text_content("#chat-error")
    page.click("nav button[data-tab=runs]")
    wait_until(page, "document.querySelector('#runs-error').textContent.length > 0")
    assert page.locator("#run-table tbody tr").count() == 0


def test_run_files_are_served_only_from_under_the_root(ui, tmp_path):
    """/api/file: paths relative to --runs-root only; traversal, absolute paths, other suffixes: 404."""
    import requests

    auth = {"Authorization": f"Bearer {KEY}"}
    listing = requests.get(f"{ui}/api/runs", headers=auth, timeout=30).json()
    plot = listing["runs"][0]["plots"][0]
    assert (
        requests.get(f"{ui}/api/file", params={"path": plot}, headers=auth, timeout=30).content[:4]
        == b"\x89PNG"
    )
    assert requests.get(f"{ui}/api/file", params={"path": plot}, timeout=30).status_code == 401
    for bad in ("../../../../etc/passwd", "/etc/passwd", "demo/../../tiny/config.json", "demo/runs/lora/../../..",
                "%2e%2e/%2e%2e/etc/passwd", "demo/runs/lora/plots/loss.png\x00.txt"):  # fmt: skip
        r = requests.get(f"{ui}/api/file", params={"path": bad}, headers=auth, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", bad
