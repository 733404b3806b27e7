"""`lmadapt serve` as a client sees it: a live server subprocess on a tiny model, driven by the official
`openai` client and raw HTTP (stream contract chunk by chunk, key, caps, bind refusal), and schemathesis
fuzzing the live /openapi.json with zero 5xx."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from tiny_lm import save_tiny

KEY = "test-key-0123456789"
PY = sys.executable
MSGS = [{"role": "user", "content": "hello how are you today?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], port: int, env=None) -> subprocess.Popen:
    cmd = [PY, "-m", "lmadapt", "serve", *args, "--port", str(port), "--dtype", "float32", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not come up in 120 s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def server(tiny):
    port = free_port()
    args = [f"tiny={tiny}", "--api-key", KEY, "--max-tokens", "200", "--max-n", "2", "--max-concurrent", "2",
            "--max-body", "20000"]  # fmt: skip
    proc = start_server(args, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()  # graceful: uvicorn finishes, then re-raises the signal (exit -15), never a traceback
    assert proc.wait(30) in (0, -15)
    assert "Traceback" not in proc.stdout.read()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def engine(tiny):
    from lmadapt.infer.engine import load_engine

    return load_engine(str(tiny), dtype="float32")


def test_models_and_non_streaming_chat_match_the_engine(client, engine):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    reply = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=12, temperature=0)
    expected = engine.generate([MSGS], max_new_tokens=12)[0]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected  # greedy over HTTP == greedy in process
    assert reply.choices[0].finish_reason == ("length" if reply.usage.completion_tokens == 12 else "stop")
    assert reply.usage.prompt_tokens == len(engine.encode(MSGS))


def test_streaming_chat_contract_chunk_by_chunk(client):
    whole = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=20, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=MSGS, max_tokens=20, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].finish_reason is None
    assert all(c.choices[0].finish_reason is None and c.choices[0].delta.content for c in middle)
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.choices[0].delta.content in (None, "")
    assert "".join(c.choices[0].delta.content for c in middle) == whole.choices[0].message.content
    assert usage.choices == [] and usage.usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_stream_ends_with_done_and_finish_reason_is_real(server):
    body = {"model": "tiny", "prompt": "the cat", "max_tokens": 3, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with requests.post(f"{server}/v1/completions", json=body, headers=headers, timeout=60, stream=True) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [x.decode() for x in r.iter_lines() if x]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(x.removeprefix("data: ")) for x in lines[:-1]]
    assert all(e["object"] == "text_completion" for e in events)
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"]]
    assert len(finishes) == 1
    # three tokens asked for: "length" unless the model ended its text first (then "stop")
    whole = requests.post(
        f"{server}/v1/completions", json=body | {"stream": False}, headers=headers, timeout=60
    )
    assert finishes[0] == whole.json()["choices"][0]["finish_reason"]
    assert (finishes[0] == "length") == (whole.json()["usage"]["completion_tokens"] == 3)


def test_completions_prompts_n_seed_and_stop(client, engine):
    reply = client.completions.create(model="tiny", prompt=["the cat", "paris"], max_tokens=8, temperature=0)
    assert [c.text for c in reply.choices] == engine.generate(["the cat", "paris"], max_new_tokens=8)
    kw = {"model": "tiny", "prompt": "one two", "max_tokens": 10, "temperature": 1.5, "n": 2}
    a = client.completions.create(seed=5, **kw)
    b = client.completions.create(seed=5, **kw)
    c = client.completions.create(seed=6, **kw)
    assert [x.text for x in a.choices] == [x.text for x in b.choices]  # seeded: reproducible
    assert a.choices[0].text != a.choices[1].text or a.choices[0].text != c.choices[0].text
    full = client.completions.create(model="tiny", prompt="one two", max_tokens=16, temperature=0).choices[0]
    assert len(full.text) > 4
    stop = full.text[2:4]
    cut = client.completions.create(model="tiny", prompt="one two", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert full.text.startswith(cut.choices[0].text) and stop not in cut.choices[0].text
    streamed = client.completions.create(
        model="tiny", prompt="one two", max_tokens=16, temperature=0, stop=[stop], stream=True
    )
    assert "".join(x.choices[0].text for x in streamed) == cut.choices[0].text  # a held-back tail never leaks


def test_key_is_required_and_checked(server):
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong-key-xxxxxxxx", max_retries=0).models.list()
    assert wrong.value.status_code == 401
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {KEY}"}):
        r = requests.post(
            f"{server}/v1/chat/completions", json={"model": "tiny", "messages": MSGS}, headers=headers
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(f"{server}/health").status_code == 200  # liveness needs no key and says nothing more


def test_caps_and_unsupported_parameters_are_4xx_in_openai_shape(server, client):
    def post(body, route="chat/completions"):
        return requests.post(
            f"{server}/v1/{route}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )

    base = {"model": "tiny", "messages": MSGS, "max_tokens": 4}
    cases = {
        "max_tokens": base | {"max_tokens": 201},
        "n": base | {"n": 3},
        "logprobs": base | {"logprobs": True},
        "tools": base | {"tools": [{"type": "function", "function": {"name": "f"}}]},
        "frequency_penalty": base | {"frequency_penalty": 0.5},
        "bogus": base | {"bogus": 1},
        "temperature": base | {"temperature": -1},
        "stop": base | {"stop": ["a", "b", "c", "d", "e"]},
    }
    for param, body in cases.items():
        r = post(body)
        assert r.status_code == 400, (param, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert param in error["message"] or param == error["param"], (param, error)
    for name in ("nope", "../../etc/passwd", str(Path.home())):  # a model name never reaches the disk
        r = post(base | {"model": name})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = post(base | {"messages": [{"role": "user", "content": "x" * 30000}]})
    assert r.status_code == 413 and "error" in r.json()
    long_prompt = " ".join(["one two three"] * 80)  # past the tiny model's 256 positions
    r = post({"model": "tiny", "prompt": long_prompt, "max_tokens": 10}, "completions")
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=500)


def _long_stream(server, results: list, read_all: bool = True):
    body = {"model": "tiny", "prompt": "one two", "max_tokens": 200, "temperature": 0, "stream": True,
            "stop": None}  # fmt: skip
    try:
        with requests.post(f"{server}/v1/completions", json=body, stream=True,
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as r:  # fmt: skip
            if r.status_code != 200:
                results.append((r.status_code, r.json()))
                return
            for _ in r.iter_lines():
                if not read_all:
                    break  # leave after the first line: the server must free the slot
            results.append((200, None))
    except requests.RequestException as exc:
        results.append(("error", str(exc)))


def test_concurrency_cap_429_and_disconnect_frees_the_slot(server, client):
    whole = client.completions.create(model="tiny", prompt="one two", max_tokens=200, temperature=0)
    assert whole.choices[0].finish_reason == "length"  # the precondition: each request runs 200 steps
    for _ in range(3):  # clients that go away after one line: with 2 slots, a leak would show below
        _long_stream(server, [], read_all=False)
    for _attempt in range(5):  # the last leaver's slot comes back when the server next writes to it: a
        results: list = []  # burst may start before that, but a leaked slot never comes back
        threads = [threading.Thread(target=_long_stream, args=(server, results)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(str(s) for s, _ in results)
        if statuses.count("200") >= 2:
            break
        time.sleep(1)
    assert statuses.count("200") >= 2 and "429" in statuses and "error" not in statuses, statuses
    busy = next(body for s, body in results if s == 429)
    assert busy["error"]["type"] == "rate_limit_error"
    again = client.completions.create(model="tiny", prompt="the cat", max_tokens=2, temperature=0)
    assert again.choices[0].text is not None  # the slots came back


def test_refuses_to_bind_beyond_loopback_without_a_key(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LMADAPT_API_KEY"}
    cmd = [PY, "-m", "lmadapt", "serve", str(tiny), "--host", "0.0.0.0", "--port", str(free_port())]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "API key" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "empty.key").write_text("\n")
    done = subprocess.run([*cmd, "--api-key-file", str(tmp_path / "empty.key")], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "empty.key" in done.stderr


def test_schemathesis_fuzzing_the_live_schema_finds_no_5xx(server, tmp_path):
    cmd = [
        str(Path(PY).with_name("schemathesis")), "run", f"{server}/openapi.json", "--checks", "not_a_server_error",
        "--max-examples", "20", "--phases", "examples,fuzzing", "-H", f"Authorization: Bearer {KEY}",
        "--seed", "1", "--request-timeout", "60", "--workers", "1", "--suppress-health-check", "all",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache too
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "5xx" not in done.stdout, done.stdout[-2000:]
    print(done.stdout[-1500:])


def test_several_lora_runs_over_one_base_each_answer_as_their_own_run(tiny, tmp_path):
    """Two sft LoRA runs and their base in one server: each name answers exactly as that run does in
    process, also when requests for all three arrive at once (the adapter is switched per batch)."""
    from lmadapt.infer.engine import load_engine
    from lmadapt.stages.sft import run
    from test_sft import PAIRS, sft_recipe

    runs = []
    for name, lr in (("a", 2e-2), ("b", 5e-3)):
        (tmp_path / name).mkdir()
        recipe = sft_recipe(tmp_path / name, tiny, train={"epochs": 4, "lr": lr})
        runs.append(run(recipe))
    prompts = [[{"role": "user", "content": i}] for i, _ in PAIRS[:3]]
    expected = {
        "base": load_engine(str(tiny), dtype="float32").generate(prompts, max_new_tokens=10),
        "a": load_engine(str(runs[0]), dtype="float32").generate(prompts, max_new_tokens=10),
        "b": load_engine(str(runs[1]), dtype="float32").generate(prompts, max_new_tokens=10),
    }
    assert expected["a"] != expected["base"] and expected["a"] != expected["b"]
    port = free_port()
    proc = start_server([f"base={tiny}", f"a={runs[0]}", f"b={runs[1]}"], port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["base", "a", "b"]
        got: dict = {}

        def ask(name: str, k: int) -> None:
            reply = client.chat.completions.create(
                model=name, messages=prompts[k], max_tokens=10, temperature=0
            )
            got[(name, k)] = reply.choices[0].message.content

        threads = [threading.Thread(target=ask, args=(n, k)) for k in range(3) for n in expected]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {n: [got[(n, k)] for k in range(3)] for n in expected} == expected
    finally:
        proc.terminate()
        proc.wait(30)


def test_synth_openai_backend_works_against_this_server(server, engine, monkeypatch):
    from lmadapt.synth.backends import OpenAIBackend

    monkeypatch.setenv("SERVE_TEST_KEY", KEY)
    for chat in (False, True):
        backend = OpenAIBackend(
            f"{server}/v1", "tiny", api_key_env="SERVE_TEST_KEY", chat=chat, concurrency=2
        )
        got = backend.generate(["the cat", "paris"], max_new_tokens=6, temperature=0, top_p=1.0)
        prompts = (
            [[{"role": "user", "content": p}] for p in ("the cat", "paris")] if chat else ["the cat", "paris"]
        )
        assert got == engine.generate(prompts, max_new_tokens=6)


def test_generate_command_through_this_server_equals_the_engine(server, engine, tmp_path, monkeypatch):
    """`lmadapt generate --server`: chat and prompt records over HTTP give the in-process engine's greedy text."""
    from typer.testing import CliRunner

    from lmadapt.cli import app

    records = [{"messages": MSGS}, {"prompt": "the cat"}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    monkeypatch.setenv("SERVE_TEST_KEY", KEY)
    args = ["generate", "tiny", "--input", str(src), "--output", str(tmp_path / "out.jsonl"), "--server",
            f"{server}/v1", "--api-key-env", "SERVE_TEST_KEY", "--max-new-tokens", "6"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["output"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert got == engine.generate([MSGS, "the cat"], max_new_tokens=6)
    refused = CliRunner().invoke(app, [*args, "--num-beams", "2"])
    assert refused.exit_code == 2 and "--num-beams" in refused.output
