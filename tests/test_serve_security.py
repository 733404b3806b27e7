"""`lmadapt serve` against a hostile browser and a hostile client (issue 23), replayed against live server
subprocesses with real requests: DNS rebinding (a foreign Host), cross-site requests (a foreign Origin, "simple"
content types), request amplification (rows, prompt characters), a client that stops reading, run folders
that point outside the runs root or are malformed, and what a careless start-up would allow (a port out of
range, CORS '*' without a key, a world-readable key file). Also the client shapes real OpenAI clients send
(text parts, the `developer` role, neutral parameters). The UI's stored-XSS case runs in the real browser
(tests/test_ui_browser.py). docs/security.md is the threat model these tests check.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from test_serve import KEY, MSGS, PY, free_port, start_server
from tiny_lm import save_tiny

EVIL = "http://evil.example"
ALLOWED = "mybox.lan"
CORS = "http://app.example"
SECRET = "the content of a file outside the runs root"


def tfidf_run(root: Path) -> Path:
    """A complete finetune run folder (the tfidf baseline: real predictions, no model to load)."""
    from lmadapt.stages import run_stage
    from test_finetune import recipe_for, sentiment, write_splits

    data = write_splits(root.parent, sentiment, sizes=(80, 20, 20))
    recipe = recipe_for(root, "unused", {"type": "classify", "id": "id"}, {"type": "tfidf"}, data)
    return Path(run_stage(recipe))


def hostile_root(tmp: Path) -> Path:
    """--runs-root with one good run, and run folders whose files point outside the root or are malformed."""
    root = tmp / "runs"
    root.mkdir()
    good = tfidf_run(root)
    outside = tmp / "outside.json"
    outside.write_text(json.dumps({"metric": "f1_macro", "rows": [{"name": SECRET, "f1_macro": 1.0}],
                                   "final": {"test": {SECRET: 1.0}}}))  # fmt: skip
    linked = root / "linked"
    linked.mkdir()
    (linked / "leaderboard.json").symlink_to(outside)
    stolen = root / "stolen"
    stolen.mkdir()
    for name in ("config.yaml", "status.json"):
        (stolen / name).write_bytes((good / name).read_bytes())
    (stolen / "metrics.json").symlink_to(outside)
    listed = root / "listed"
    listed.mkdir()
    (listed / "config.yaml").write_text("- a\n- yaml\n- list\n")
    (listed / "status.json").write_text(json.dumps({"status": "complete"}))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny model with 4096 positions and no end-of-text token, nor a chat template's end-of-turn (so every
    request runs to max_tokens): a stream long enough to fill a stalled client's socket buffers."""
    folder = save_tiny(tmp_path_factory.mktemp("secure") / "tiny", chat_template=None)
    for name, change in (("config.json", {"max_position_embeddings": 4096, "eos_token_id": None}),
                         ("generation_config.json", {"eos_token_id": None}), ("tokenizer_config.json",
                         {"eos_token": None})):  # fmt: skip
        saved = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(saved | change))
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return hostile_root(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def open_server(tiny, root):
    """Loopback, no key (the default set-up): two slots, rows capped at 4, a 5 s deadline per request, streams
    cut after 2 s unread."""
    port = free_port()
    args = [f"tiny={tiny}", "--runs-root", str(root), "--allowed-host", ALLOWED, "--max-tokens", "4000",
            "--max-n", "4", "--max-batch", "8", "--max-rows", "4", "--max-concurrent", "2", "--write-timeout",
            "2", "--request-timeout", "5", "--max-predict-rows", "30"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LMADAPT_API_KEY"}
    proc = start_server(args, port, env)
    yield f"http://127.0.0.1:{port}", proc
    proc.terminate()
    assert proc.wait(30) in (0, -15)
    assert "Traceback" not in proc.stdout.read()


@pytest.fixture(scope="module")
def keyed_server(tiny, root):
    """With a key: any Host (the key decides), CORS for one origin, a 0.3 s generation deadline."""
    port = free_port()
    args = [f"tiny={tiny}", "--api-key", KEY, "--runs-root", str(root), "--cors-origin", CORS,
            "--max-tokens", "4000", "--max-n", "4", "--max-batch", "8", "--request-timeout", "0.3"]  # fmt: skip
    proc = start_server(args, port)
    yield f"http://127.0.0.1:{port}", proc
    proc.terminate()
    assert proc.wait(30) in (0, -15)
    assert "Traceback" not in proc.stdout.read()


def _routes(url: str) -> list[tuple[str, str, dict]]:
    """(method, url, requests kwargs) for every route a rebound page would want."""
    chat = {"model": "tiny", "messages": MSGS, "max_tokens": 2}
    return [
        ("GET", f"{url}/", {}),
        ("GET", f"{url}/v1/models", {}),
        ("POST", f"{url}/v1/chat/completions", {"json": chat}),
        ("GET", f"{url}/api/runs", {}),
        ("GET", f"{url}/api/file", {"params": {"path": "run/config.yaml"}}),
        (
            "POST",
            f"{url}/api/predict",
            {
                "params": {"run": "run", "filename": "x.jsonl"},
                "data": b'{"text": "a"}\n',
                "headers": {"Content-Type": "application/octet-stream"},
            },
        ),  # fmt: skip
        ("GET", f"{url}/openapi.json", {}),
    ]


def _send(method, url, kwargs, headers=None):
    merged = {**kwargs.get("headers", {}), **(headers or {})}
    return requests.request(method, url, **{**kwargs, "headers": merged}, timeout=60)


# ---------------------------------------------------------------- row 1: DNS rebinding, cross-site reads
def test_a_rebound_page_gets_403_on_every_route_and_loopback_names_pass(open_server):
    url, _ = open_server
    port = url.rsplit(":", 1)[1]
    for method, route, kwargs in _routes(url):
        r = _send(method, route, kwargs, {"Host": f"evil.example:{port}", "Origin": f"{EVIL}:{port}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host", (route, r.text)
        r = _send(method, route, kwargs)  # the same request from a loopback client
        assert r.status_code == 200, (route, r.text)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost", f"{ALLOWED}:{port}"):
        assert requests.get(f"{url}/v1/models", headers={"Host": host}, timeout=30).status_code == 200, host
    for host in ("127.0.0.1.evil.example", "localhost.evil.example", f"0.0.0.0:{port}", ""):
        assert requests.get(f"{url}/v1/models", headers={"Host": host}, timeout=30).status_code == 403, host


def test_a_foreign_origin_is_refused_on_v1_and_api_and_the_same_origin_passes(open_server):
    url, _ = open_server
    for method, route, kwargs in _routes(url)[1:]:
        for origin in (EVIL, "null", "http://127.0.0.1:1"):
            r = _send(method, route, kwargs, {"Origin": origin})
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin", (route, origin)
        assert _send(method, route, kwargs, {"Origin": url}).status_code == 200, route  # the UI itself
    assert requests.get(f"{url}/", headers={"Origin": EVIL}, timeout=30).status_code == 200  # a page, no data


def test_with_a_key_the_key_decides_the_host_but_a_foreign_origin_still_needs_cors(keyed_server):
    url, _ = keyed_server
    auth = {"Authorization": f"Bearer {KEY}"}
    r = requests.get(f"{url}/v1/models", headers={**auth, "Host": "my.server.example"}, timeout=30)
    assert r.status_code == 200
    r = requests.get(f"{url}/v1/models", headers={**auth, "Origin": EVIL}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
    r = requests.get(f"{url}/v1/models", headers={**auth, "Origin": CORS}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS
    preflight = requests.options(f"{url}/v1/chat/completions", timeout=30, headers={
        "Origin": CORS, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == CORS
    assert requests.get(f"{url}/openapi.json", timeout=30).status_code == 401  # the schema is behind the key
    assert requests.get(f"{url}/openapi.json", headers=auth, timeout=30).json()["openapi"]


# ---------------------------------------------------------------- row 2: amplification
def _rss_mb(proc) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_rows_are_capped_before_any_work_and_memory_stays_flat(open_server):
    url, proc = open_server
    before = _rss_mb(proc)
    body = {"model": "tiny", "prompt": ["a"] * 1000, "n": 4, "max_tokens": 1}
    r = requests.post(f"{url}/v1/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_sequences", r.text
    assert "4000 sequences" in r.json()["error"]["message"] and "at most 4" in r.json()["error"]["message"]
    wide = {**body, "prompt": ["a"] * 790_000}  # ~4 MB, under the body cap: 3.16M rows asked for
    r = requests.post(f"{url}/v1/completions", json=wide, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_sequences", r.text[:300]
    grew = _rss_mb(proc) - before
    assert grew < 100, f"the server grew by {grew:.0f} MB refusing the request"
    ok = requests.post(f"{url}/v1/completions", json={**body, "prompt": ["a", "b"], "n": 2}, timeout=60)
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 4  # at the cap: served


def test_a_job_wider_than_the_batch_is_split_into_batches_not_run_alone(tiny):
    """Scheduler: 10 rows with max_batch 3 decode at most 3 at a time, and each row's text is what the
    engine gives it alone (greedy)."""
    from lmadapt.infer import decode
    from lmadapt.infer.engine import load_engine
    from lmadapt.infer.scheduler import Scheduler, Target

    engine = load_engine(str(tiny), dtype="float32")
    prompts = ["one two", "the cat", "hello how", "what is", "please extract"] * 2
    widths, plain_add = [], decode.DecodeBatch.add

    def add(self, seqs):
        plain_add(self, seqs)
        widths.append(len(self))

    decode.DecodeBatch.add = add
    try:
        scheduler = Scheduler(max_batch=3)
        seqs = [engine.sequence(engine.encode(p), engine.decoding(max_new_tokens=6)) for p in prompts]
        done = threading.Event()

        def on_delta(seq, text):
            if all(s.done for s in seqs):
                done.set()

        scheduler.submit(Target("tiny", engine), seqs, on_delta, lambda exc: done.set())
        assert done.wait(60)
        scheduler.close()
    finally:
        decode.DecodeBatch.add = plain_add
    assert max(widths) <= 3 and len(widths) >= 4, widths
    alone = [engine.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert [s.text for s in seqs] == alone


# ---------------------------------------------------------------- row 3: cross-site uploads
def test_predict_needs_a_preflighted_content_type_is_capped_and_takes_a_slot(open_server, root):
    url, _ = open_server
    records = "".join(json.dumps({"id": f"r{i}", "text": "the movie was great"}) + "\n" for i in range(5))
    params = {"run": "run", "filename": "new.jsonl"}
    simple = requests.post(f"{url}/api/predict", params=params, data=records, timeout=60,
                           headers={"Content-Type": "text/plain", "Origin": EVIL})  # fmt: skip
    assert simple.status_code == 403
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": kind} if kind else {}
        r = requests.post(
            f"{url}/api/predict", params=params, data=records.encode(), headers=headers, timeout=60
        )
        assert r.status_code == 415 and "octet-stream" in r.json()["error"]["message"], kind
    octet = {"Content-Type": "application/octet-stream"}
    r = requests.post(f"{url}/api/predict", params=params, data=records, headers=octet, timeout=60)
    assert r.status_code == 200 and len(r.text.splitlines()) == 5
    assert json.loads(r.text.splitlines()[0])["prediction"] in ("pos", "neg")
    many = records * 7  # 35 records > --max-predict-rows 30
    r = requests.post(f"{url}/api/predict", params=params, data=many, headers=octet, timeout=60)
    assert r.status_code == 400 and "at most 30" in r.json()["error"]["message"]
    bad = requests.post(f"{url}/api/predict", params=params, data=b'{"nope": 1}\n', headers=octet, timeout=60)
    assert bad.status_code == 400 and str(root) not in bad.text and "/tmp" not in bad.text, bad.text
    streams = [_stream_request(url, max_tokens=250) for _ in range(2)]  # both slots held
    try:
        r = requests.post(f"{url}/api/predict", params=params, data=records, headers=octet, timeout=60)
        assert r.status_code == 429 and r.headers["Retry-After"]
    finally:
        for s in streams:
            s.close()


def _stream_request(url: str, max_tokens: int, n: int = 1):
    body = {"model": "tiny", "prompt": "one two", "max_tokens": max_tokens, "n": n, "temperature": 0,
            "stream": True}  # fmt: skip
    r = requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=60)
    assert r.status_code == 200, r.text
    return r


# ---------------------------------------------------------------- row 4: slow readers
def _stalled_stream(port: int) -> socket.socket:
    """A raw client with a tiny receive buffer that sends a long streaming request and never reads (4 x 4000
    tokens: megabytes of events, more than the socket buffers on both sides hold)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    body = json.dumps({"model": "tiny", "prompt": "one two", "max_tokens": 4000, "n": 4, "temperature": 0,
                       "stream": True}).encode()  # fmt: skip
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body)
    return sock


def test_a_client_that_stops_reading_loses_its_slot_within_the_deadline(open_server):
    """Loopback buffers hold megabytes (Linux autotunes them up to 4 MiB), so a stalled client is cut by
    the request's deadline at the latest; the write timeout cuts it sooner once its buffers are full (the
    next test drives that case directly)."""
    url, proc = open_server
    port = int(url.rsplit(":", 1)[1])
    stalled = [_stalled_stream(port) for _ in range(2)]  # both slots, once the server has admitted them
    try:
        until, busy = time.monotonic() + 4, None  # a loaded machine may take a while to admit both
        while time.monotonic() < until and getattr(busy, "status_code", None) != 429:
            time.sleep(0.1)
            busy = requests.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 1},
                                 timeout=60)  # fmt: skip
        if busy.status_code != 429:  # the engine outran the socket buffers: both streams were written whole
            for sock in stalled:  # before a probe found both slots taken; then they must have ended
                sock.settimeout(60)
                while sock.recv(65536):
                    pass
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline:  # 4000 steps take a minute; the deadline is 5 s
            r = requests.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 1},
                              timeout=60)  # fmt: skip
            status = r.status_code
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, "the stalled streams still hold the slots"
        if busy.status_code != 429:
            return  # the slots came back (no leak); the stall itself: the write-timeout test below
        for sock in stalled:  # stopped early: a timeout error event, or cut
            sock.settimeout(30)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            assert received.startswith(b"HTTP/1.1 200") and b'"finish_reason": "length"' not in received
            assert b'"code": "timeout"' in received or b"data: [DONE]" not in received
    finally:
        for sock in stalled:
            sock.close()


def test_a_stream_whose_writes_stall_is_cut_after_the_write_timeout_and_frees_its_slot(tiny):
    """The ASGI app driven directly: after five events every write of the response waits forever (a full
    socket buffer); the app returns after write_timeout, unfinished, with its slot back and its rows gone."""
    import asyncio

    from lmadapt.serve.app import ServeOptions, create_app
    from lmadapt.serve.models import load_served

    app = create_app(
        load_served([f"tiny={tiny}"]), ServeOptions(write_timeout=0.5, max_tokens=4000, max_rows=4)
    )
    body = json.dumps(
        {"model": "tiny", "prompt": "one two", "max_tokens": 4000, "n": 4, "stream": True}
    ).encode()
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000)}  # fmt: skip
    sent: list[dict] = []

    async def main() -> float:
        delivered = False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never hangs up

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) > 5:
                await asyncio.Event().wait()  # and never reads again

        start = asyncio.get_running_loop().time()
        await asyncio.wait_for(app(scope, receive, send), 60)
        return asyncio.get_running_loop().time() - start

    jobs, submit = [], app.state.scheduler.submit
    app.state.scheduler.submit = lambda *args: jobs.append(submit(*args)) or jobs[-1]
    try:
        took = asyncio.run(main())
        assert app.state.slots.used == 0
        assert sent[0]["status"] == 200 and all(m.get("more_body", True) for m in sent[1:])  # never finished
        reasons = [s.finish_reason for j in jobs for s in j.sequences]
        assert reasons == ["cancelled"] * 4, reasons  # they leave
        for _ in range(100):  # ... at the decode thread's next step
            if not app.state.scheduler._owner:
                break
            time.sleep(0.1)
        assert not app.state.scheduler._owner
        print(f"cut after {took:.2f} s")
    finally:
        app.state.scheduler.close()


def test_a_request_past_its_deadline_is_stopped(keyed_server):
    url, _ = keyed_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as late:  # 8 rows x 4000 steps: seconds, past 0.3 s
        client.completions.create(model="tiny", prompt=["one two", "the cat"], n=4, max_tokens=4000)
    assert late.value.status_code == 504 and "deadline" in late.value.message
    texts = []
    with pytest.raises(openai.APIError, match="deadline of 0.3 s"):  # the stream's error event
        for event in client.completions.create(
            model="tiny", prompt="one two", max_tokens=4000, stream=True, n=4
        ):
            texts += [c.text for c in event.choices]
    assert "".join(texts)  # what came before the deadline was streamed
    raw = requests.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60, json={
        "model": "tiny", "prompt": "one two", "max_tokens": 4000, "n": 4, "stream": True}).text  # fmt: skip
    assert '"code": "timeout"' in raw and raw.rstrip().endswith("data: [DONE]")


# ---------------------------------------------------------------- row 5: the runs listing
def test_runs_listing_reads_only_regular_files_under_the_root_and_skips_malformed_folders(open_server):
    url, _ = open_server
    r = requests.get(f"{url}/api/runs", timeout=30)
    assert r.status_code == 200 and SECRET not in r.text
    listing = r.json()
    assert [run["path"] for run in listing["runs"]] == ["run"]
    skipped = {s["path"]: s["reason"] for s in listing["skipped"]}
    assert set(skipped) == {"linked", "stolen", "listed"}, skipped
    assert "not a regular file under the runs root" in skipped["linked"]
    assert "metrics.json" in skipped["stolen"] and "mapping" in skipped["listed"]
    r = requests.get(f"{url}/api/file", params={"path": "stolen/metrics.json"}, timeout=30)
    assert r.status_code == 404


# ---------------------------------------------------------------- rows 6-8: headers, big bodies, content types
def test_every_answer_carries_the_security_headers(open_server):
    url, _ = open_server
    for path in ("/", "/ui/app.js", "/v1/models", "/api/runs", "/health"):
        r = requests.get(f"{url}{path}", timeout=30)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert (
            r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
        )
    assert "innerHTML" not in (Path(__file__).parents[1] / "src/lmadapt/serve/ui/app.js").read_text().replace(
        "never innerHTML", "")  # fmt: skip


def test_a_huge_prompt_is_refused_by_its_characters_before_tokenizing(open_server):
    url, _ = open_server
    messages = [{"role": "user", "content": "word " * 199_999}] * 4  # 4 MB of text
    latencies, done = [], threading.Event()

    def poll():
        while not done.is_set():
            start = time.monotonic()
            requests.get(f"{url}/health", timeout=30)
            latencies.append(time.monotonic() - start)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        r = requests.post(
            f"{url}/v1/chat/completions", json={"model": "tiny", "messages": messages}, timeout=120
        )
    finally:
        done.set()
        poller.join()
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "3999980 characters" in r.json()["error"]["message"], r.json()
    print(f"/health while a 4 MB body was refused: max {max(latencies):.3f} s over {len(latencies)} calls")


def test_json_sent_as_a_simple_content_type_is_refused(open_server):
    url, _ = open_server
    body = json.dumps({"model": "tiny", "messages": MSGS, "max_tokens": 2})
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", None):
        headers = {"Content-Type": kind} if kind else {}
        r = requests.post(f"{url}/v1/chat/completions", data=body.encode(), headers=headers, timeout=30)
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", kind
    r = requests.post(f"{url}/v1/chat/completions", data=body, timeout=30,
                      headers={"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert r.status_code == 200


# ---------------------------------------------------------------- start-up refusals
def _serve(args: list[str], env=None) -> subprocess.CompletedProcess:
    env = env or {k: v for k, v in os.environ.items() if k != "LMADAPT_API_KEY"}
    return subprocess.run([PY, "-m", "lmadapt", "serve", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_bad_start_up_options_stop_before_any_model_loads(tmp_path):
    missing = str(tmp_path / "no-such-model")  # a model that would fail later: the options fail first
    for args, said in (
        (["--port", "99999"], "--port 99999: a TCP port is 1-65535"),
        (["--cors-origin", "*"], "--cors-origin '*' without an API key"),
        (["--max-rows", "0"], "--max-rows 0: must be above 0"),
        (["--write-timeout", "-1"], "--write-timeout -1.0: must be above 0"),
    ):
        done = _serve([missing, *args])
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = _serve([missing, "--port", str(busy.getsockname()[1])])
        assert (
            done.returncode == 2 and "cannot listen there" in done.stderr and "Traceback" not in done.stderr
        )
    key = tmp_path / "key.txt"
    key.write_text(KEY + "\n")
    key.chmod(0o644)
    done = _serve([missing, "--api-key-file", str(key), "--port", "99999"])
    assert "can be read by every user" in done.stderr and done.returncode == 2


# ---------------------------------------------------------------- well-formed clients
def test_text_parts_developer_role_and_neutral_parameters_are_served(keyed_server, tiny):
    from lmadapt.infer.engine import load_engine

    url, _ = keyed_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    engine = load_engine(str(tiny), dtype="float32")
    parts = [{"type": "text", "text": "hello how"}, {"type": "text", "text": "are you today?"}]
    reply = client.chat.completions.create(
        model="tiny", max_tokens=6, temperature=0, parallel_tool_calls=False, metadata={"app": "test"},
        messages=[{"role": "developer", "content": "you are a helpful bot"}, {"role": "user", "content": parts}],
        store=True, tools=[], tool_choice="none", logprobs=False, presence_penalty=0, frequency_penalty=0,
        logit_bias={}, response_format={"type": "text"}, user="u1", service_tier="auto",
    )  # fmt: skip
    expected = engine.generate([[{"role": "system", "content": "you are a helpful bot"},
                                 {"role": "user", "content": "hello how\nare you today?"}]], max_new_tokens=6)[0]  # fmt: skip
    assert reply.choices[0].message.content == expected
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="tiny", max_tokens=2, messages=[{"role": "user", "content": image}]
        )
    assert "text parts only" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", max_tokens=2, messages=MSGS, logit_bias={"5": 10})
    assert "logit_bias" in refused.value.message


def test_sigterm_lets_an_open_stream_go_on_then_exits_as_the_signal_would(tiny):
    """Graceful shutdown with the decode loop on the main thread and uvicorn beside it: a stream already open
    goes on after SIGTERM (to its end, or cut at the graceful limit), new connections are refused, and the
    process ends with the signal's own exit (-15), no traceback."""
    port = free_port()
    proc = start_server([f"tiny={tiny}", "--max-tokens", "1500"], port)
    body = {"model": "tiny", "prompt": "one two", "max_tokens": 1500, "temperature": 0, "stream": True}
    with requests.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60, stream=True) as r:
        lines = r.iter_lines()
        assert next(x for x in lines if x).startswith(b"data: ")
        proc.terminate()
        rest = [x.decode() for x in lines if x]
    assert rest[-1] == "data: [DONE]" and len(rest) > 20  # it went on after the signal
    assert proc.wait(30) == -15
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    assert "Traceback" not in proc.stdout.read()
