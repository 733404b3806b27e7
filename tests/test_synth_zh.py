"""Self-Instruct in Chinese: ROUGE-L over characters, the Chinese blacklist, length limits in characters, the
program and language rules, seeds drawn from Alpaca rows (alpaca-zh), and a whole Chinese run."""

import json
from importlib.resources import files

import pytest

from lmadapt.errors import DataError
from lmadapt.synth import load_seeds, load_synth_config, run_synth
from lmadapt.synth import prompts as P
from lmadapt.synth.backends import ScriptedBackend
from lmadapt.synth.config import SynthConfig
from lmadapt.synth.filters import InstructionPool, InstructionRules, check_instruction
from lmadapt.synth.pipeline import alpaca_classifies

ZH = InstructionRules(language="zh")


def reason(text, pool=(), rules=ZH):
    return check_instruction(text, InstructionPool(pool), rules)[0]


def test_rouge_l_is_over_characters_for_chinese():
    pool = InstructionPool(["写一首关于春天的短诗。"])
    sim = pool.similarity("写一首关于秋天的短诗。")
    assert sim.max_rouge_l == 0.9  # 9 of 10 characters in common (punctuation is not a token)
    assert reason("写一首关于秋天的短诗。", ["写一首关于春天的短诗。"]) == "rouge_l"
    assert reason("解释光合作用的基本过程。", ["写一首关于春天的短诗。"]) is None
    mixed = InstructionPool(["用Python写一个函数，计算列表的平均值。"]).similarity(
        "用Python写一个函数，计算列表的中位数。"
    )
    assert mixed.max_rouge_l == 0.8  # 12 of 15 tokens: "python" is one token, each Chinese character one


@pytest.mark.parametrize(
    "text",
    ["请描述这张图片中的人物。", "根据下面的数据绘制一张柱状图。", "画出中国地图的轮廓。", "把这段视频的内容写成文字。",
     "打开这个文件并统计行数。", "为这首音乐写一段评论。", "请画一幅山水画。", "把这张照片里的文字读出来。"],
)  # fmt: skip
def test_the_chinese_blacklist_rejects_what_a_text_model_cannot_do(text):
    assert reason(text) == "blacklist"


@pytest.mark.parametrize(
    "text", ["介绍一位著名的画家。", "用文字刻画一个人物的性格。", "推荐三部好看的动画电影。"]
)
def test_painting_as_a_topic_is_not_blacklisted(text):
    assert reason(text) is None  # "画" alone is no blacklist word: 画家, 刻画, 动画 are things to write about


def test_length_limits_count_characters_for_chinese_and_words_for_english():
    assert reason("写诗。") == "too_short"  # 2 characters < min_chars 5
    assert reason("写一首诗。") == "too_short" and reason("写一首短诗。") is None  # 4 and 5 characters
    long_zh = "请根据下面的要求写一篇文章，" * 30  # 390 characters: over max_chars 300, far under 150 words
    assert reason(long_zh[:280] + "。") is None and reason(long_zh) == "too_long"
    en = InstructionRules()
    assert reason("Write a poem.", rules=en) is None  # 3 words: min_words 3
    assert reason("Write poems.", rules=en) == "too_short"
    assert reason(" ".join(["word"] * 151), rules=en) == "too_long"


def test_program_requests_chinese_punctuation_and_other_languages():
    assert reason("编写一个程序，计算一个数的阶乘。") == "program"
    assert reason("Write a program that sorts a list.", rules=InstructionRules()) == "program"
    assert reason("解释程序员的日常工作。") is None  # only the request to write a program goes
    assert reason("，写一首关于夏天的诗。") == "starts_with_punctuation"
    assert reason("“春晓”这首诗表达了什么？") == "starts_with_punctuation"
    assert reason("Write a poem about spring rain.") == "not_chinese"  # a Chinese run wants Chinese tasks
    assert reason("Write a poem about spring rain.", rules=InstructionRules()) is None


ALPACA_ROWS = [
    {"instruction": "解释为什么水对人类至关重要。", "input": "", "output": "水是人体的主要组成部分。"},
    {"instruction": "将以下步骤分类为硬件技术或软件技术。", "input": "安装驱动程序", "output": "软件技术。"},
    {"instruction": "将下面的句子翻译成英文。", "input": "我爱你", "output": "I love you"},
    {"instruction": "判断这条评论的情感是正面还是负面。", "input": "太好吃了", "output": "正面"},
    {"instruction": "分类以下动物并说明理由。", "input": "猪、鸡、牛", "output": "猪和牛属于哺乳动物，是家畜；鸡属于鸟类，是家禽，所以它们可以归为两类。"},
    {"instruction": "写一首关于春天的短诗。", "input": "", "output": "春风拂面花自开。"},
    {"instruction": "列出三种常见的水果。", "input": "", "output": "苹果、香蕉、橙子。"},
    {"instruction": "总结这段文字的主要内容。", "input": "今天天气很好。", "output": "天气好。"},
]  # fmt: skip


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_seeds_from_alpaca_rows_and_a_seeded_sample(tmp_path):
    seeds = load_seeds(str(write_rows(tmp_path / "alpaca.jsonl", ALPACA_ROWS)))
    assert [s.instruction for s in seeds] == [r["instruction"] for r in ALPACA_ROWS]
    assert seeds[1].instances == [{"input": "安装驱动程序", "output": "软件技术。"}]
    # classification: asks to classify or judge, and answers with a short label (not an explanation)
    assert [s.is_classification for s in seeds] == [False, True, False, True, False, False, False, False]
    assert not alpaca_classifies("写一首诗。", "正面") and alpaca_classifies(
        "Classify this animal.", "mammal"
    )
    sample = load_seeds(str(tmp_path / "alpaca.jsonl"), limit=4, seed=1)
    assert len(sample) == 4 and sum(s.is_classification for s in sample) == 2  # the rare kind always stays
    assert sample == load_seeds(str(tmp_path / "alpaca.jsonl"), limit=4, seed=1)  # seeded
    others = {s.instruction for seed in range(6) for s in load_seeds(str(tmp_path / "alpaca.jsonl"), 4, seed)}
    assert len(others) > 4  # different seeds draw different tasks
    bad = write_rows(tmp_path / "bad.jsonl", [ALPACA_ROWS[0], {"instruction": "写诗", "output": 3}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'output': expected a string"):
        load_seeds(str(bad))


def test_a_chinese_run_from_alpaca_seeds_filters_and_counts(tmp_path):
    seeds = write_rows(tmp_path / "alpaca.jsonl", ALPACA_ROWS)
    generated = iter(
        ["解释为什么天空是蓝色的。", "Write a story about a dragon.", "编写一个程序，输出九九乘法表。",
         "请描述这张图片。", "写一首关于春天的短诗歌。", "比较猫和狗作为宠物的优缺点。"] * 4
    )  # fmt: skip
    t = P.TEXT["zh"]

    def respond(prompt):
        if prompt.startswith(t["instruction_header"]):
            return f" {next(generated)}\n任务 10：{next(generated)}\n\n"
        if prompt.startswith(t["clf_question"]):
            return " 否"
        return "输入：天空\n输出：因为瑞利散射。\n\n任务：下一个"

    cfg = SynthConfig.model_validate(
        {"seeds": str(seeds), "language": "zh", "output": str(tmp_path / "out"), "target": 2}
        | {"prompts_per_round": 3, "max_rounds": 4, "max_seeds": 6, "classify_shots": 2}
    )
    out = run_synth(cfg, backend=ScriptedBackend(respond), progress=False)
    tasks = [json.loads(x) for x in (out / "tasks.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["instruction"] for x in tasks] == ["解释为什么天空是蓝色的。", "比较猫和狗作为宠物的优缺点。"]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    rejected = stats["rejected_by_instruction_filter"]
    assert rejected["not_chinese"] >= 1 and rejected["program"] >= 1 and rejected["blacklist"] >= 1
    assert rejected["rouge_l"] >= 1 and stats["seeds"] == 6


def test_the_shipped_chinese_synth_recipe():
    cfg = load_synth_config(files("lmadapt") / "recipes" / "synth" / "self-instruct-zh.yaml")
    assert cfg.language == "zh" and cfg.seeds == "alpaca-zh" and cfg.max_seeds == 175
    assert "图片" in cfg.filters.blacklist and cfg.filters.max_chars == 300
