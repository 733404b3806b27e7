"""Prompts of the Self-Instruct pipeline (Wang et al., 2023) and the Alpaca variant (Taori et al., 2023).

Each builder takes plain arguments and returns one prompt string; each parser turns a completion back into
structured items. The wording is ours; the structure follows the papers:

* instruction generation: a numbered list of 8 instructions (6 human-written seeds and 2 earlier machine
  ones, more seeds while fewer machine ones exist), ending where the model continues the list;
* classification identification: a few-shot yes/no prompt;
* instance generation: input-first for ordinary tasks, output-first (class label, then an input for it) for
  classification tasks so the labels stay balanced;
* Alpaca: one request for 20 diverse tasks with a list of requirements and 3 seed examples.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class SeedTask:
    """A task of the pool: an instruction, its worked examples, and whether it is a classification task."""

    instruction: str
    instances: list[dict] = field(default_factory=list)
    is_classification: bool = False


TEXT = {
    "en": {
        "instruction_header": "Come up with a series of tasks:",
        "task": "Task",
        "clf_question": (
            "Can the following task be regarded as a classification task with finite output labels?"
        ),
        "clf_answer": "Is it classification?",
        "yes": "Yes",
        "no": "No",
        "instances_input_first": (
            "Write examples for each task below. Give several examples when you can. When a task needs no "
            "extra input, skip the input line and write the output directly."
        ),
        "instances_output_first": (
            "Each task below is a classification task. For each possible class label, write the label "
            "first and then an input that belongs to it. When a task needs no input, just list the possible "
            "labels."
        ),
        "example": "Example",
        "input": "Input",
        "output": "Output",
        "label": "Class label",
        "alpaca_header": (
            "Your job is to come up with {n} varied task instructions. A language model will be asked to "
            "carry out each instruction, and we will judge how well it does.\n\n"
            "Requirements:\n"
            "1. Use a different verb in each instruction so the set stays diverse.\n"
            "2. Vary the phrasing too: mix questions and commands.\n"
            "3. Cover many kinds of tasks: open-ended writing, classification, editing, rewriting, "
            "brainstorming, question answering, reasoning, coding, and more.\n"
            "4. Every task must be doable with text alone: nothing that needs seeing images, hearing audio, "
            "opening files or acting in the world.\n"
            "5. Write every instruction in English, in one or two sentences.\n"
            "6. When a task needs an input, give a concrete, realistic one of at most 100 words (no "
            "placeholders). Tasks that need no input get <noinput> instead.\n"
            "7. The output must be a fitting answer to the instruction and its input, under 100 words.\n\n"
            "List of {n} tasks:"
        ),
        "noinput": "<noinput>",
    },
    "zh": {
        "instruction_header": "请想出一系列任务：",
        "task": "任务",
        "clf_question": "下面的任务能否看作输出标签有限的分类任务？",
        "clf_answer": "是分类任务吗？",
        "yes": "是",
        "no": "否",
        "instances_input_first": (
            "为下面每个任务写出示例，尽量多写几个。如果任务不需要额外输入，省略输入行，直接写输出。"
        ),
        "instances_output_first": (
            "下面每个任务都是分类任务。对每个可能的类别标签，先写标签，再写一个属于该类别的输入。"
            "如果任务不需要输入，只列出可能的标签。"
        ),
        "example": "示例",
        "input": "输入",
        "output": "输出",
        "label": "类别标签",
        "alpaca_header": (
            "请想出{n}个不同的任务指令。语言模型将执行这些指令，我们会评估它完成得好不好。\n\n"
            "要求：\n"
            "1. 每条指令使用不同的动词，保证多样性。\n"
            "2. 措辞也要多样：疑问句和祈使句都可以。\n"
            "3. 覆盖多种任务类型：开放式写作、分类、编辑、改写、头脑风暴、问答、推理、编程等。\n"
            "4. 任务必须只用文字就能完成：不能要求看图片、听音频、打开文件或在现实中行动。\n"
            "5. 每条指令用中文写，一到两句话。\n"
            "6. 需要输入的任务要给出具体、真实的输入，不超过100字，不要用占位符。"
            "不需要输入的任务写<noinput>。\n"
            "7. 输出要恰当地回应指令和输入，不超过100字。\n\n"
            "{n}个任务的列表："
        ),
        "noinput": "<noinput>",
    },
}


def _text(language: str) -> dict[str, str]:
    return TEXT[language]


# ---------------------------------------------------------------- instruction generation (Self-Instruct)
def sample_prompt_instructions(
    rng: random.Random,
    human: Sequence[str],
    machine: Sequence[str],
    total: int = 8,
    n_machine: int = 2,
) -> tuple[list[str], list[str]]:
    """Pick in-context instructions: `n_machine` machine ones (fewer while fewer exist), the rest seeds."""
    chosen_machine = rng.sample(list(machine), min(n_machine, len(machine)))
    chosen_human = rng.sample(list(human), min(total - len(chosen_machine), len(human)))
    return chosen_human, chosen_machine


def instruction_prompt(instructions: Sequence[str], language: str = "en") -> str:
    """A numbered task list that the model continues: 'Task 1: ...' ... 'Task 9:'."""
    t = _text(language)
    lines = [t["instruction_header"]]
    for i, inst in enumerate(instructions, 1):
        lines.append(f"{t['task']} {i}: {' '.join(inst.split())}")
    lines.append(f"{t['task']} {len(instructions) + 1}:")
    return "\n".join(lines)


_TERMINAL = tuple(".?!。？！)）\"'”」")


def parse_instructions(completion: str, language: str = "en") -> list[str]:
    """Instructions in a continuation of `instruction_prompt` (the first one has no 'Task N:' prefix).

    A last item without terminal punctuation was most likely cut by the token limit and is dropped.
    """
    t = _text(language)
    parts = re.split(rf"\n\s*{re.escape(t['task'])}\s*\d+\s*[:：]", "\n" + completion.lstrip(" "))
    if parts and not parts[0].strip():
        parts = parts[1:]
    # Instructions are shown one per line, so anything after a task's first line is the model rambling.
    items = [" ".join(part.strip().split("\n")[0].split()) for part in parts]
    if len(items) > 1 and items[-1] and not items[-1].endswith(_TERMINAL):
        items.pop()
    return [item for item in items if item]


# ---------------------------------------------------------------- classification identification
def classification_prompt(task: str, examples: Sequence[SeedTask], language: str = "en") -> str:
    """Few-shot yes/no prompt: is `task` a classification task with finite output labels?"""
    t = _text(language)
    blocks = [t["clf_question"], ""]
    for ex in examples:
        answer = t["yes"] if ex.is_classification else t["no"]
        blocks += [f"{t['task']}: {' '.join(ex.instruction.split())}", f"{t['clf_answer']} {answer}", ""]
    blocks += [f"{t['task']}: {' '.join(task.split())}", t["clf_answer"]]
    return "\n".join(blocks)


def pick_classification_examples(rng: random.Random, seeds: Sequence[SeedTask], n: int = 8) -> list[SeedTask]:
    """Half classification, half not (as far as the seeds allow), shuffled."""
    yes = [s for s in seeds if s.is_classification]
    no = [s for s in seeds if not s.is_classification]
    n_yes = min(len(yes), n // 2)
    picked = rng.sample(yes, n_yes) + rng.sample(no, min(len(no), n - n_yes))
    rng.shuffle(picked)
    return picked


def parse_classification(completion: str, language: str = "en") -> bool:
    """True when the answer starts with yes."""
    t = _text(language)
    answer = completion.strip().lower()
    return answer.startswith(t["yes"].lower())


# ---------------------------------------------------------------- instance generation
def _render_input_first(task: SeedTask, t: dict, max_instances: int) -> list[str]:
    lines = [f"{t['task']}: {' '.join(task.instruction.split())}"]
    for i, inst in enumerate(task.instances[:max_instances], 1):
        lines.append(f"{t['example']} {i}")
        if inst.get("input", "").strip():
            lines.append(f"{t['input']}: {inst['input'].strip()}")
        lines.append(f"{t['output']}: {inst['output'].strip()}")
    return lines


def _render_output_first(task: SeedTask, t: dict, max_instances: int) -> list[str]:
    lines = [f"{t['task']}: {' '.join(task.instruction.split())}"]
    for inst in task.instances[:max_instances]:
        lines.append(f"{t['label']}: {inst['output'].strip()}")
        if inst.get("input", "").strip():
            lines.append(f"{t['input']}: {inst['input'].strip()}")
    return lines


def instance_prompt(
    task: str,
    is_classification: bool,
    demos: Sequence[SeedTask],
    language: str = "en",
    max_instances: int = 3,
) -> str:
    """Input-first prompt for ordinary tasks, output-first (label, then input) for classification tasks."""
    t = _text(language)
    if is_classification:
        header, render, tail = t["instances_output_first"], _render_output_first, f"{t['label']}:"
    else:
        header, render, tail = t["instances_input_first"], _render_input_first, f"{t['example']} 1\n"
    blocks = [header, ""]
    for demo in demos:
        blocks += [*render(demo, t, max_instances), ""]
    blocks += [f"{t['task']}: {' '.join(task.split())}", tail.rstrip("\n")]
    return "\n".join(blocks) + ("\n" if not is_classification else "")


def pick_instance_demos(
    rng: random.Random, seeds: Sequence[SeedTask], is_classification: bool, n: int = 2, max_chars: int = 400
) -> list[SeedTask]:
    """Seed tasks of the same kind to show as demonstrations; short ones keep the prompt cheap."""
    same = [s for s in seeds if s.is_classification == is_classification and s.instances]
    short = [s for s in same if len(s.instruction) + sum(len(str(i)) for i in s.instances[:3]) <= max_chars]
    pool = short if len(short) >= n else same
    return rng.sample(pool, min(n, len(pool)))


def _field(line: str, name: str) -> str | None:
    m = re.match(rf"\s*{re.escape(name)}\s*[:：]\s?(.*)", line)
    return m.group(1) if m else None


def parse_instances(completion: str, is_classification: bool, language: str = "en") -> list[dict]:
    """Instances ({input, output}) in a continuation of `instance_prompt`.

    Stops at the next 'Task:' (the model starting a new task). For classification the completion starts right
    after 'Class label:'.
    """
    t = _text(language)
    text = re.split(rf"\n\s*{re.escape(t['task'])}\s*[:：]", completion)[0]
    if is_classification:
        # Labels and their inputs are short; a blank line means the model left the task's block.
        text = f"{t['label']}:" + text.split("\n\n")[0]
        markers = {t["label"]: "output", t["input"]: "input"}
        start = t["label"]
    else:
        text = f"{t['example']} 1\n" + text
        markers = {t["input"]: "input", t["output"]: "output"}
        start = t["example"]
    instances: list[dict] = []
    current: dict | None = None
    key: str | None = None
    for line in text.split("\n"):
        if not is_classification and re.match(rf"\s*{re.escape(start)}\s*\d+\s*$", line):
            current = {"input": "", "output": ""}
            instances.append(current)
            key = None
            continue
        matched = False
        for name, slot in markers.items():
            value = _field(line, name)
            if value is None:
                continue
            matched = True
            if is_classification and slot == "output":
                current = {"input": "", "output": ""}
                instances.append(current)
            if current is None:
                current = {"input": "", "output": ""}
                instances.append(current)
            current[slot] = value
            key = slot
            break
        if not matched and current is not None and key is not None:
            current[key] += "\n" + line
    cleaned = []
    for inst in instances:
        inp, out = inst["input"].strip(), inst["output"].strip()
        if out:
            cleaned.append({"input": inp, "output": out})
    return cleaned


# ---------------------------------------------------------------- Alpaca variant
def alpaca_prompt(examples: Sequence[SeedTask], n_tasks: int = 20, language: str = "en") -> str:
    """One request for `n_tasks` diverse tasks: requirements, then the seed examples, then the next number."""
    t = _text(language)
    lines = [t["alpaca_header"].format(n=n_tasks)]
    for i, ex in enumerate(examples, 1):
        inst = ex.instances[0] if ex.instances else {"input": "", "output": ""}
        inp = inst.get("input", "").strip() or t["noinput"]
        lines += [
            "###",
            f"{i}. Instruction: {' '.join(ex.instruction.split())}",
            f"{i}. Input:",
            inp,
            f"{i}. Output:",
            inst.get("output", "").strip(),
        ]
    lines += ["###", f"{len(examples) + 1}. Instruction:"]
    return "\n".join(lines)


def parse_alpaca(completion: str, first_number: int, language: str = "en") -> list[dict]:
    """(instruction, input, output) triples from a continuation of `alpaca_prompt`.

    A last block cut by the token limit (no output yet) yields nothing.
    """
    t = _text(language)
    text = f"{first_number}. Instruction:" + completion
    tasks = []
    for block in re.split(r"\n?\s*###\s*\n?", text):
        m = re.match(
            r"\s*\d+\s*\.\s*Instruction:(.*?)\n\s*\d+\s*\.\s*Input:(.*?)\n\s*\d+\s*\.\s*Output:(.*)",
            block,
            re.DOTALL,
        )
        if not m:
            continue
        instruction, inp, out = (
            " ".join(g.split()) if i == 0 else g.strip() for i, g in enumerate(m.groups())
        )
        if inp.lower() in {t["noinput"], "<noinput>", "noinput", "none", "n/a", "无"}:
            inp = ""
        tasks.append({"instruction": instruction, "input": inp, "output": out})
    return tasks
