"""`lmadapt synth`: prompt structure, every filter, resume after a crash, Chinese seeds, the HTTP backend."""

import http.server
import json
import random
import re
import threading

import pytest

from lmadapt.errors import DataError, RecipeError
from lmadapt.synth import load_seeds, load_synth_config, run_synth
from lmadapt.synth import prompts as P
from lmadapt.synth.backends import OpenAIBackend, ScriptedBackend
from lmadapt.synth.config import SynthConfig
from lmadapt.synth.filters import (
    InstructionPool,
    InstructionRules,
    blacklisted,
    check_instruction,
    filter_instances,
    rouge_l,
    tokenize,
)
from lmadapt.synth.pipeline import Store

WORDS = " ".join(
    [
        "apple river castle engine violet summer ladder pocket thunder garden silver rocket canyon pepper",
        "marble harbor jungle lantern meadow orbit puzzle quartz saddle tunnel walnut yogurt zipper anchor",
        "bridge cobalt dragon ember falcon glacier hammer island jasmine kettle lemon mirror nectar oyster",
        "parrot quiver raven salmon tiger umbrella valley willow xenon yacht zebra acorn basket candle",
        "desert feather goblet hazel",
    ]
).split()
VERBS = ["Write", "Explain", "Summarize", "Classify", "Translate"]
VERBS += ["List", "Describe", "Compare", "Suggest", "Rewrite"]


def seed_records(n_plain=10, n_clf=4):
    recs = []
    for i in range(n_plain):
        recs.append(
            {
                "id": f"seed_{i}",
                "name": f"t{i}",
                "instruction": f"Human seed task number {i}: {' '.join(WORDS[i * 3 : i * 3 + 3])}.",
                "instances": [{"input": f"seed input {i}", "output": f"seed output {i}"}],
                "is_classification": False,
            }
        )
    for i in range(n_clf):
        recs.append(
            {
                "id": f"clf_{i}",
                "name": f"c{i}",
                "instruction": f"Classify the sentiment of review kind {WORDS[40 + i]}.",
                "instances": [
                    {"input": "I loved it.", "output": "positive"},
                    {"input": "Awful.", "output": "negative"},
                ],
                "is_classification": True,
            }
        )
    return recs


def write_seeds(tmp_path, recs, name="seeds.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


class Responder:
    """A scripted 'model' that answers each kind of synth prompt in the expected format."""

    def __init__(self, seed=0, language="en"):
        self.rng = random.Random(seed)
        self.t = P.TEXT[language]
        self.counter = 0

    def new_instruction(self):
        self.counter += 1
        words = " ".join(self.rng.sample(WORDS, 6))
        return f"{self.rng.choice(VERBS)} {words} {self.counter}."

    def __call__(self, prompt: str) -> str:
        t = self.t
        if prompt.startswith(t["instruction_header"]):
            items = [self.new_instruction() for _ in range(3)]
            return f" {items[0]}\n{t['task']} 10: {items[1]}\n{t['task']} 11: {items[2]}\n\n"
        if prompt.startswith(t["clf_question"]):
            last = prompt.rsplit(f"{t['task']}:", 1)[1]
            return f" {t['yes']}" if "Classify" in last else f" {t['no']}"
        if prompt.startswith(t["instances_output_first"]):
            return (
                f" positive\n{t['input']}: great stuff\n{t['label']}: negative\n{t['input']}: bad stuff\n\n"
            )
        n = self.counter
        return (
            f"{t['input']}: in {n}\n{t['output']}: out {n}\n{t['example']} 2\n{t['input']}: other {n}\n"
            f"{t['output']}: more {n}\n\n{t['task']}: next"
        )


def make_cfg(tmp_path, seeds, **kw):
    base = {"seeds": str(seeds), "output": str(tmp_path / "out"), "target": 12, "prompts_per_round": 2}
    return SynthConfig.model_validate({**base, **kw})


# ---------------------------------------------------------------- prompt structure
def test_instruction_prompt_mixes_six_human_and_two_machine():
    rng = random.Random(0)
    humans = [f"human {i}" for i in range(20)]
    machine = [f"machine {i}" for i in range(5)]
    h, m = P.sample_prompt_instructions(rng, humans, machine, total=8, n_machine=2)
    assert len(h) == 6 and len(m) == 2 and set(h) <= set(humans) and set(m) <= set(machine)
    # Fewer machine instructions while fewer exist; seeds fill the 8 places.
    assert [len(x) for x in P.sample_prompt_instructions(rng, humans, [], 8, 2)] == [8, 0]
    assert [len(x) for x in P.sample_prompt_instructions(rng, humans, ["only one"], 8, 2)] == [7, 1]
    prompt = P.instruction_prompt(h + m)
    lines = prompt.split("\n")
    assert lines[0] == "Come up with a series of tasks:"
    assert [re.match(r"Task (\d+): ", line).group(1) for line in lines[1:9]] == [str(i) for i in range(1, 9)]
    assert lines[-1] == "Task 9:"


def test_pipeline_prompts_hold_machine_instructions_once_they_exist(tmp_path):
    seeds = write_seeds(tmp_path, seed_records())
    backend = ScriptedBackend(Responder())
    run_synth(make_cfg(tmp_path, seeds, target=10), backend=backend, progress=False)
    human = {r["instruction"] for r in seed_records()}
    gen_prompts = [p for p in backend.prompts if p.startswith("Come up with")]
    mixes = []
    for p in gen_prompts:
        listed = [re.sub(r"^Task \d+: ", "", line) for line in p.split("\n")[1:-1]]
        assert len(listed) == 8
        mixes.append(sum(x in human for x in listed))
    assert mixes[0] == 8  # first round: no machine instruction yet
    assert mixes[-1] == 6  # later: 6 human + 2 machine


def test_classification_prompt_and_output_first_instances():
    seeds = [
        P.SeedTask(**{k: r[k] for k in ("instruction", "instances", "is_classification")})
        for r in seed_records()
    ]
    shots = P.pick_classification_examples(random.Random(0), seeds, 4)
    assert sum(s.is_classification for s in shots) == 2
    prompt = P.classification_prompt("Is this email spam?", shots)
    assert prompt.startswith(
        "Can the following task be regarded as a classification task with finite output labels?"
    )
    assert prompt.endswith("Task: Is this email spam?\nIs it classification?")
    assert prompt.count("Is it classification? Yes") == 2 and prompt.count("Is it classification? No") == 2
    assert P.parse_classification(" Yes") and not P.parse_classification(" No, it is not")

    demos = P.pick_instance_demos(random.Random(0), seeds, True, 1)
    out_first = P.instance_prompt("Is this email spam?", True, demos)
    demo_block = out_first.split("\n\n")[1].split("\n")
    assert demo_block[1].startswith("Class label: ") and demo_block[2].startswith(
        "Input: "
    )  # label, then input
    assert out_first.endswith("Task: Is this email spam?\nClass label:")
    parsed = P.parse_instances(
        " spam\nInput: win a prize now\nClass label: not spam\nInput: lunch at 1?\n\nramble on", True
    )
    assert parsed == [
        {"input": "win a prize now", "output": "spam"},
        {"input": "lunch at 1?", "output": "not spam"},
    ]

    in_first = P.instance_prompt(
        "Summarize the text.", False, P.pick_instance_demos(random.Random(0), seeds, False, 1)
    )
    assert in_first.endswith("Task: Summarize the text.\nExample 1\n")
    assert "Input: seed input" in in_first and in_first.index("Input:") < in_first.index("Output:")
    parsed = P.parse_instances("Input: a b\nOutput: ab\nExample 2\nOutput: no input here\n\nTask: x", False)
    assert parsed == [{"input": "a b", "output": "ab"}, {"input": "", "output": "no input here"}]


def test_alpaca_prompt_has_requirements_three_seeds_and_parses():
    seeds = [P.SeedTask(r["instruction"], r["instances"], r["is_classification"]) for r in seed_records()][:3]
    prompt = P.alpaca_prompt(seeds, 20)
    assert "20 varied task instructions" in prompt and "Requirements:" in prompt
    assert [line for line in prompt.split("\n") if re.match(r"\d+\. Instruction:", line)][
        -1
    ] == "4. Instruction:"
    assert prompt.count("###") == 4
    completion = (
        " Name a fruit.\n4. Input:\n<noinput>\n4. Output:\nApple\n###\n"
        "5. Instruction: Add.\n5. Input:\n2 2\n5. Output:\n4"
    )
    assert P.parse_alpaca(completion, 4) == [
        {"instruction": "Name a fruit.", "input": "", "output": "Apple"},
        {"instruction": "Add.", "input": "2 2", "output": "4"},
    ]


def test_parse_instructions_drops_truncated_tail():
    out = " Write a poem about rain.\nTask 10: Sort these numbers.\nTask 11: Explain why the sky is"
    assert P.parse_instructions(out) == ["Write a poem about rain.", "Sort these numbers."]


# ---------------------------------------------------------------- filters
def test_rouge_l_and_cjk_tokenization():
    assert tokenize("Write a poem, please!") == ["write", "a", "poem", "please"]
    assert tokenize("写一首关于春天的诗 AI") == ["写", "一", "首", "关", "于", "春", "天", "的", "诗", "ai"]
    assert rouge_l(tokenize("the cat sat"), tokenize("the cat sat")) == 1.0
    assert rouge_l(tokenize("a b c d"), tokenize("a x c y")) == pytest.approx(0.5)
    assert rouge_l(tokenize("写一首诗"), tokenize("写一首歌")) == pytest.approx(0.75)
    assert rouge_l([], tokenize("x")) == 0.0


def test_each_instruction_filter():
    pool = InstructionPool(["Write a short poem about the sea.", "Translate the sentence into French."])
    rules = InstructionRules(rouge_threshold=0.7, min_words=3, max_words=10)
    assert check_instruction("Summarize.", pool, rules)[0] == "too_short"
    assert check_instruction("word " * 11, pool, rules)[0] == "too_long"
    assert check_instruction("- Make a list of fruits.", pool, rules)[0] == "starts_with_punctuation"
    for bad in [
        "Describe the image below.",
        "Draw a cat for me.",
        "Go to the store and buy milk.",
        "Plot the data.",
    ]:
        assert check_instruction(bad, pool, rules)[0] == "blacklist", bad
    assert check_instruction("Describe the mapping of keys.", pool, rules)[0] is None  # whole words only
    assert blacklisted("请描述这张图片的内容。", ["图片"]) == "图片"
    assert check_instruction("write a short  poem about the SEA.", pool, rules)[0] == "duplicate"
    reason, sim = check_instruction("Write a short poem about the ocean.", pool, rules)
    assert (
        reason == "rouge_l"
        and sim.max_rouge_l >= 0.7
        and sim.most_similar == "Write a short poem about the sea."
    )
    reason, sim = check_instruction("List three uses of copper wire.", pool, rules)
    assert reason is None and sim.max_rouge_l < 0.7 and len(sim.top) == 2
    # The threshold is configurable.
    assert (
        check_instruction(
            "Write a short poem about the ocean.", pool, InstructionRules(rouge_threshold=0.95)
        )[0]
        is None
    )


def test_instance_filters():
    kept, dropped = filter_instances(
        [
            {"input": "2+2", "output": "4"},
            {"input": "2+2", "output": "4"},  # exact duplicate
            {"input": "x", "output": "1"},
            {"input": "x", "output": "2"},  # same input, different output: both go
            {"input": "y", "output": "  "},  # empty output
            {"input": "", "output": "free text"},
        ]
    )
    assert kept == [{"input": "2+2", "output": "4"}, {"input": "", "output": "free text"}]
    assert dropped == {"empty_output": 1, "duplicate_instance": 1, "conflicting_outputs": 2}


# ---------------------------------------------------------------- the pipeline
def test_run_reaches_target_writes_alpaca_and_stats(tmp_path):
    seeds = write_seeds(tmp_path, seed_records())
    out = run_synth(
        make_cfg(tmp_path, seeds, target=12), backend=ScriptedBackend(Responder()), progress=False
    )
    tasks = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (out / "alpaca.jsonl").read_text().splitlines()]
    assert len(tasks) == 12 and len({t["instruction"] for t in tasks}) == 12
    assert all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert len(rows) == sum(len(t["instances"]) for t in tasks)
    assert all(0 <= t["max_rouge_l"] < 0.7 and t["most_similar"] and t["rouge_top"] for t in tasks)
    clf = [t for t in tasks if t["is_classification"]]
    assert clf and all(t["instances"][0]["output"] == "positive" for t in clf)  # output-first parsing
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accepted_tasks"] == 12 and set(stats["rejected_by_instruction_filter"]) >= {
        "rouge_l",
        "blacklist",
    }
    assert stats["leading_verbs"] and (out / "plots" / "rouge_l.png").stat().st_size > 1000
    assert "| leading verb | count |" in (out / "stats.md").read_text()


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path):
    seeds = write_seeds(tmp_path, seed_records())
    cfg = make_cfg(tmp_path, seeds, target=15)
    crashing = ScriptedBackend(Responder(seed=1), fail_after=30)  # dies mid-run, mid-round
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_synth(cfg, backend=crashing, progress=False)
    out = tmp_path / "out"
    before = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
    assert 0 < len(before) < 15
    # Simulate a kill during the next append too: a torn, half-written line at the end of both files.
    with open(out / "tasks.jsonl", "a") as f:
        f.write('{"id": "synth-99", "instruction": "half')
    with open(out / "alpaca.jsonl", "a") as f:
        f.write('{"instruction": "orphan row", "input": "", "output": "x"}\n')
    run_synth(cfg, backend=ScriptedBackend(Responder(seed=2)), progress=False)
    after = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (out / "alpaca.jsonl").read_text().splitlines()]
    assert after[: len(before)] == before  # nothing lost
    assert len(after) == 15 and len({t["instruction"] for t in after}) == 15  # no duplicates
    assert [t["id"] for t in after] == [f"synth-{i}" for i in range(15)]
    assert rows == [{"instruction": t["instruction"], **x} for t in after for x in t["instances"]]
    # The reloaded pool keeps filtering against earlier accepted instructions.
    store = Store(out)
    assert len(store.tasks) == 15
    assert len(json.loads((out / "stats.json").read_text())["runs"]) == 2


def test_chinese_seed_file(tmp_path):
    recs = [
        {"instruction": "写一首关于春天的短诗。", "instances": [{"input": "", "output": "春风拂面花自开。"}]},
        {
            "instruction": "把下面的句子翻译成英文。",
            "instances": [{"input": "我爱你", "output": "I love you"}],
        },
        {
            "instruction": "总结这段文字的主要内容。",
            "instances": [{"input": "今天天气很好。", "output": "天气好。"}],
        },
        {
            "instruction": "判断这条评论的情感是正面还是负面。",
            "instances": [{"input": "太好吃了", "output": "正面"}],
            "is_classification": True,
        },
    ]
    seeds = write_seeds(tmp_path, recs)
    assert len(load_seeds(str(seeds))) == 4
    zh_items = iter(
        ["解释为什么天空是蓝色的。", "列出三种常见的水果。", "请描述这张图片。", "写一首关于春天的短诗歌。"]
        * 3
    )

    def respond(prompt):
        t = P.TEXT["zh"]
        if prompt.startswith(t["instruction_header"]):
            return f" {next(zh_items)}\n任务 10：{next(zh_items)}\n\n"
        if prompt.startswith(t["clf_question"]):
            return " 否"
        return "输入：天空\n输出：因为散射。\n\n任务：下一个"

    backend = ScriptedBackend(respond)
    out = run_synth(
        make_cfg(tmp_path, seeds, target=2, language="zh", max_rounds=3), backend=backend, progress=False
    )
    assert backend.prompts[0].startswith("请想出一系列任务：\n任务 1：") or "任务 1:" in backend.prompts[0]
    # The first prompt is the Chinese template: its header, then every seed as "任务 i: ...", then "任务 5:".
    lines = backend.prompts[0].split("\n")
    assert lines[0] == "请想出一系列任务："
    numbered = [re.fullmatch(r"任务 (\d+): (.+)", line) for line in lines[1:-1]]
    assert [m.group(1) for m in numbered] == ["1", "2", "3", "4"]
    assert sorted(m.group(2) for m in numbered) == sorted(r["instruction"] for r in recs)
    assert lines[-1] == "任务 5:"
    tasks = [json.loads(x) for x in (out / "tasks.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [t["instruction"] for t in tasks] == ["解释为什么天空是蓝色的。", "列出三种常见的水果。"]
    assert tasks[0]["instances"] == [{"input": "天空", "output": "因为散射。"}]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = {r["instruction"]: r["reason"] for r in rejected}
    assert reasons["请描述这张图片。"] == "blacklist"
    assert reasons["写一首关于春天的短诗歌。"] == "rouge_l"  # close to a Chinese seed: CJK-aware ROUGE-L
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert dict(stats["leading_verbs"]) == {"解释": 1, "列出": 1}


def test_bad_seed_file_and_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"instruction": "ok", "instances": [{"input": "", "output": "x"}]}\n{"instruction": "no"}\n'
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'instances'"):
        load_seeds(str(bad))
    cfg = tmp_path / "s.yaml"
    cfg.write_text("method: self-instruct\ntarget: 5\nfilters:\n  rouge_treshold: 0.5\n")
    with pytest.raises(RecipeError, match=r"s.yaml:4: unknown key 'filters.rouge_treshold'; did you mean"):
        load_synth_config(cfg)
    ok = tmp_path / "ok.yaml"
    ok.write_text("target: 5\n")
    assert (
        load_synth_config(ok, ["filters.rouge_threshold=0.5", "backend.batch_size=4"]).filters.rouge_threshold
        == 0.5
    )


def test_shipped_synth_configs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "recipes" / "synth"
    paths = sorted(folder.glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        load_synth_config(path)


# ---------------------------------------------------------------- HTTP backend
class _Handler(http.server.BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, body, self.headers.get("Authorization")))
        if len(type(self).calls) == 1:  # first request fails: the client must retry
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        text = f"echo:{body['prompt'][-5:]} STOP tail"
        payload = json.dumps({"choices": [{"text": text}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_openai_backend_against_local_server_with_one_retry(monkeypatch):
    _Handler.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SYNTH_TEST_KEY", "sk-test")
        backend = OpenAIBackend(
            f"http://127.0.0.1:{server.server_port}/v1",
            "tiny",
            api_key_env="SYNTH_TEST_KEY",
            concurrency=1,
            timeout_s=5,
            max_retries=2,
            backoff_s=0.01,
        )
        outs = backend.generate(
            ["prompt-aaaaa", "prompt-bbbbb"], max_new_tokens=8, temperature=0.7, top_p=0.9, stop=[" STOP"]
        )
        assert outs == ["echo:aaaaa", "echo:bbbbb"]
        assert len(_Handler.calls) == 3  # one 503, retried, then the second prompt
        path, body, auth = _Handler.calls[0]
        assert path == "/v1/completions" and body["model"] == "tiny" and body["max_tokens"] == 8
        assert body["stop"] == [" STOP"] and auth == "Bearer sk-test"
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.delenv("SYNTH_TEST_KEY")
    from lmadapt.errors import SourceError

    with pytest.raises(SourceError, match="SYNTH_TEST_KEY"):
        OpenAIBackend("http://127.0.0.1:1/v1", "x", api_key_env="SYNTH_TEST_KEY")
    dead = OpenAIBackend("http://127.0.0.1:9/v1", "x", timeout_s=1, max_retries=1, backoff_s=0.01)
    with pytest.raises(SourceError, match="gave up after 2 attempts"):
        dead.generate(["p"], max_new_tokens=1, temperature=0, top_p=1)
