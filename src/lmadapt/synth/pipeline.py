"""`lmadapt synth`: grow a task pool from seed tasks, Self-Instruct style (or Alpaca style), resumably.

Output folder::

    OUT/config.yaml        the resolved synth config
    OUT/tasks.jsonl        accepted tasks, appended as accepted: instruction, instances, is_classification,
                           max_rouge_l, most_similar, rouge_top (the similarity scores), round
    OUT/rejected.jsonl     rejected candidates with the filter that rejected them (and scores when computed)
    OUT/alpaca.jsonl       one {instruction, input, output} row per instance: what `stage: sft` reads
    OUT/stats.json|md      counts per filter, leading verbs, timing;  OUT/plots/rouge_l.png

A run killed at any point restarts from these files: the pool is reloaded from tasks.jsonl (a half-written
last line is dropped), alpaca.jsonl is rebuilt from it, so nothing accepted is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..utils.io import append_jsonl, read_appendable_jsonl, write_json, write_jsonl, write_text
from . import prompts as P
from .backends import Backend
from .config import SynthConfig, synth_config_to_yaml
from .filters import (
    InstructionPool,
    InstructionRules,
    check_instruction,
    filter_instances,
    tokenize,
    word_count,
)

INSTRUCTION_FILTERS = [
    "empty",
    "too_short",
    "too_long",
    "starts_with_punctuation",
    "not_chinese",
    "blacklist",
    "program",
    "duplicate",
    "rouge_l",
]
INSTANCE_FILTERS = ["empty_output", "duplicate_instance", "conflicting_outputs"]


# ---------------------------------------------------------------- seeds
def _seed_file(source: str) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    from ..sources import resolve_dataset

    folder = Path(resolve_dataset(source))
    if folder.is_file():
        return folder
    return folder / "train.jsonl"


def load_seeds(source: str, limit: int | None = None, seed: int = 0) -> list[P.SeedTask]:
    """Seed tasks from a catalog dataset (split train) or a JSONL file; `limit`: a seeded sample of that many
    (every classification seed, the rest drawn at random).

    A record is a Self-Instruct seed {instruction, instances: [{input, output}], is_classification} or an
    Alpaca row {instruction, input, output} (one instance; a classification task when `alpaca_classifies`).
    Raises DataError naming the file, line and field of the first malformed record.
    """
    path = _seed_file(source)
    if not path.is_file():
        raise DataError(f"{path}: seed file not found")
    seeds = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                seeds.append(_seed_task(line, f"{path}:{lineno}"))
    if not seeds:
        raise DataError(f"{path}: no seed tasks")
    if limit is not None and limit < len(
        seeds
    ):  # classification seeds are rare (alpaca-zh: 4 of 800): all stay
        rng = random.Random(seed)
        clf = [i for i, s in enumerate(seeds) if s.is_classification][:limit]
        rest = [i for i, s in enumerate(seeds) if not s.is_classification]
        keep = sorted(clf + rng.sample(rest, limit - len(clf)))
        seeds = [seeds[i] for i in keep]
    return seeds


def _seed_task(line: str, where: str) -> P.SeedTask:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    inst = rec.get("instruction")
    if not isinstance(inst, str) or not inst.strip():
        raise DataError(f"{where}: field 'instruction': expected a non-empty string, got {inst!r}")
    if "instances" not in rec and "output" in rec:  # an Alpaca row
        for key in ("input", "output"):
            if not isinstance(rec.get(key, ""), str):
                raise DataError(f"{where}: field '{key}': expected a string, got {rec[key]!r}")
        instance = {"input": rec.get("input", "").strip(), "output": rec["output"].strip()}
        return P.SeedTask(inst.strip(), [instance], alpaca_classifies(inst, instance["output"]))
    instances = rec.get("instances")
    if not isinstance(instances, list) or not instances:
        raise DataError(
            f"{where}: field 'instances': expected a non-empty list of {{input, output}} "
            "(or give an Alpaca row: instruction, input, output)"
        )
    for i, x in enumerate(instances):
        if not isinstance(x, dict) or not isinstance(x.get("output"), str):
            raise DataError(f"{where}: field 'instances[{i}].output': expected a string")
        if not isinstance(x.get("input", ""), str):
            raise DataError(f"{where}: field 'instances[{i}].input': expected a string")
    clf = rec.get("is_classification", False)
    if not isinstance(clf, bool):
        raise DataError(f"{where}: field 'is_classification': expected true or false, got {clf!r}")
    return P.SeedTask(
        inst.strip(), [{"input": x.get("input", ""), "output": x["output"]} for x in instances], clf
    )


_CLASSIFY_WORDS = re.compile(
    r"分类|归类|归为|判断.*(是否|还是)|属于哪|哪一类|哪个类别|情感倾向|\bclassify\b|\bcategori[sz]e\b|"
    r"\bwhich (category|class)\b|\bis it (true|false)\b",
    re.IGNORECASE,
)


def alpaca_classifies(instruction: str, output: str, max_output: int = 12) -> bool:
    """Whether an Alpaca row (which has no is_classification flag) is a classification task: its instruction
    asks to classify or judge and its answer is a short label (at most `max_output` words / CJK characters).
    The seeds need some of each kind: the classification prompt shows both, and classification tasks get
    output-first instances."""
    return bool(_CLASSIFY_WORDS.search(instruction)) and 0 < word_count(output) <= max_output


# ---------------------------------------------------------------- resumable output files
def _alpaca_rows(task: dict) -> list[dict]:
    return [
        {"instruction": task["instruction"], "input": x["input"], "output": x["output"]}
        for x in task["instances"]
    ]


class Store:
    """The output folder: append-only JSONL files plus the in-memory state rebuilt from them."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tasks_path = folder / "tasks.jsonl"
        self.rejected_path = folder / "rejected.jsonl"
        self.alpaca_path = folder / "alpaca.jsonl"
        self.tasks = read_appendable_jsonl(self.tasks_path)
        self.rejected = read_appendable_jsonl(self.rejected_path)
        # alpaca.jsonl is derived: rebuilding it makes a crash between the two appends harmless.
        write_jsonl(self.alpaca_path, (row for t in self.tasks for row in _alpaca_rows(t)))

    def accept(self, task: dict) -> None:
        append_jsonl(self.tasks_path, task)
        self.tasks.append(task)
        for row in _alpaca_rows(task):
            append_jsonl(self.alpaca_path, row)

    def reject(self, record: dict) -> None:
        append_jsonl(self.rejected_path, record)
        self.rejected.append(record)


# ---------------------------------------------------------------- one round
class Synthesizer:
    """One synth run: seeds, pool, backend and store; `round()` generates, filters and appends."""

    def __init__(self, cfg: SynthConfig, backend: Backend, seeds: Sequence[P.SeedTask], store: Store):
        self.cfg, self.backend, self.seeds, self.store = cfg, backend, list(seeds), store
        self.lang = cfg.language
        self.rules = InstructionRules(
            rouge_threshold=cfg.filters.rouge_threshold,
            min_words=cfg.filters.min_words,
            max_words=cfg.filters.max_words,
            min_chars=cfg.filters.min_chars,
            max_chars=cfg.filters.max_chars,
            blacklist=tuple(cfg.filters.blacklist),
            language=cfg.language,
        )
        self.pool = InstructionPool(
            [s.instruction for s in self.seeds] + [t["instruction"] for t in store.tasks]
        )
        self.rounds = 0
        self.prompts_sent = 0

    @property
    def machine(self) -> list[str]:
        return [t["instruction"] for t in self.store.tasks]

    def _gen(self, prompts: list[str], max_new_tokens: int, stop: list[str] | None, seed: int) -> list[str]:
        s = self.cfg.sampling
        self.prompts_sent += len(prompts)
        return self.backend.generate(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            stop=stop,
            seed=seed,
        )

    def _rng(self) -> random.Random:
        # Depends on the state on disk, so a resumed run does not replay the rounds it already did.
        state = f"{self.cfg.seed}:{len(self.store.tasks)}:{len(self.store.rejected)}:{self.rounds}"
        return random.Random(state)

    def _screen(self, text: str, round_id: int) -> dict | None:
        """Instruction filters; a passing candidate joins the pool provisionally and is returned."""
        reason, sim = check_instruction(text, self.pool, self.rules)
        scores = {"max_rouge_l": sim.max_rouge_l, "most_similar": sim.most_similar, "rouge_top": sim.top}
        if reason:
            self.store.reject(
                {"instruction": text, "reason": reason, "stage": "instruction", "round": round_id, **scores}
            )
            return None
        self.pool.add(text)
        return {"instruction": text, **scores}

    def _finish(self, cand: dict, instances: list[dict], round_id: int) -> bool:
        kept, dropped = filter_instances(instances)
        kept = kept[: self.cfg.filters.max_instances]
        record = {
            **cand,
            "instances_generated": len(instances),
            "instances_dropped": dropped,
            "round": round_id,
        }
        if len(self.store.tasks) >= self.cfg.target:  # the last round's extra candidates are not needed
            self.pool.discard(cand["instruction"])
            return False
        if not kept:
            self.pool.discard(cand["instruction"])
            self.store.reject(
                {**record, "reason": "no_valid_instances", "stage": "instances", "instances": instances}
            )
            return False
        self.store.accept({"id": f"synth-{len(self.store.tasks)}", **record, "instances": kept})
        return True

    def round(self) -> int:
        """Generate a batch of candidates, filter them, append survivors; return how many were accepted."""
        rng = self._rng()
        round_id = self.rounds  # round of this invocation, kept for provenance
        self.rounds += 1
        seed = rng.randrange(2**31)
        if self.cfg.method == "alpaca":
            return self._alpaca_round(rng, seed, round_id)
        return self._self_instruct_round(rng, seed, round_id)

    def _self_instruct_round(self, rng: random.Random, seed: int, round_id: int) -> int:
        cfg, lang = self.cfg, self.lang
        humans = [s.instruction for s in self.seeds]
        prompts = []
        for _ in range(cfg.prompts_per_round):
            human, machine = P.sample_prompt_instructions(
                rng, humans, self.machine, cfg.prompt_instructions, cfg.machine_per_prompt
            )
            listed = human + machine
            rng.shuffle(listed)
            prompts.append(P.instruction_prompt(listed, lang))
        outs = self._gen(prompts, cfg.sampling.instruction_max_tokens, ["\n\n"], seed)
        cands = []
        for out in outs:
            for text in P.parse_instructions(out, lang):
                cand = self._screen(text, round_id)
                if cand:
                    cands.append(cand)
        if not cands:
            return 0
        # Classification identification (few-shot yes/no).
        shots = P.pick_classification_examples(rng, self.seeds, cfg.classify_shots)
        clf_out = self._gen(
            [P.classification_prompt(c["instruction"], shots, lang) for c in cands],
            cfg.sampling.classify_max_tokens,
            ["\n"],
            seed + 1,
        )
        for cand, out in zip(cands, clf_out, strict=True):
            cand["is_classification"] = P.parse_classification(out, lang)
        # Instance generation: input-first, or output-first for classification tasks.
        inst_prompts = []
        for c in cands:
            demos = P.pick_instance_demos(rng, self.seeds, c["is_classification"], cfg.instance_demos)
            inst_prompts.append(P.instance_prompt(c["instruction"], c["is_classification"], demos, lang))
        task_word = P.TEXT[lang]["task"]
        inst_out = self._gen(
            inst_prompts, cfg.sampling.instance_max_tokens, [f"\n{task_word}:", "\n\n\n"], seed + 2
        )
        accepted = 0
        for cand, out in zip(cands, inst_out, strict=True):
            instances = P.parse_instances(out, cand["is_classification"], lang)
            accepted += self._finish(cand, instances, round_id)
        return accepted

    def _alpaca_round(self, rng: random.Random, seed: int, round_id: int) -> int:
        cfg, lang = self.cfg, self.lang
        prompts = [
            P.alpaca_prompt(
                rng.sample(self.seeds, min(cfg.alpaca_examples, len(self.seeds))), cfg.alpaca_tasks, lang
            )
            for _ in range(cfg.prompts_per_round)
        ]
        outs = self._gen(
            prompts, cfg.sampling.alpaca_max_tokens, [f"\n{cfg.alpaca_tasks + 1}. Instruction"], seed
        )
        first = min(cfg.alpaca_examples, len(self.seeds)) + 1
        accepted = 0
        for out in outs:
            for item in P.parse_alpaca(out, first, lang):
                cand = self._screen(item["instruction"], round_id)
                if cand:
                    cand["is_classification"] = None
                    accepted += self._finish(
                        cand, [{"input": item["input"], "output": item["output"]}], round_id
                    )
        return accepted


# ---------------------------------------------------------------- stats
def leading_word(instruction: str) -> str:
    """The instruction's first word (lower-cased); for Chinese the first two characters (most verbs)."""
    tokens = tokenize(instruction)
    if not tokens:
        return ""
    if len(tokens[0]) == 1 and not tokens[0].isascii():
        return "".join(tokens[:2])
    return tokens[0]


def compute_stats(store: Store, seeds_count: int) -> dict:
    """Counts per filter (from the files, so they cover every invocation), verbs, similarity summary."""
    tasks, rejected = store.tasks, store.rejected
    instruction_rejects = Counter(r["reason"] for r in rejected if r.get("stage") == "instruction")
    task_rejects = Counter(r["reason"] for r in rejected if r.get("stage") == "instances")
    instance_drops = Counter()
    for r in [*tasks, *rejected]:
        instance_drops.update(r.get("instances_dropped") or {})
    candidates = len(tasks) + len(rejected)
    verbs = Counter(leading_word(t["instruction"]) for t in tasks)
    rouge = [t["max_rouge_l"] for t in tasks]
    clf = sum(1 for t in tasks if t.get("is_classification"))
    return {
        "seeds": seeds_count,
        "candidates": candidates,
        "accepted_tasks": len(tasks),
        "accepted_instances": sum(len(t["instances"]) for t in tasks),
        "classification_tasks": clf,
        "rejected_by_instruction_filter": {k: instruction_rejects.get(k, 0) for k in INSTRUCTION_FILTERS},
        "rejected_tasks_after_instances": dict(task_rejects),
        "instances_dropped": {k: instance_drops.get(k, 0) for k in INSTANCE_FILTERS},
        "rouge_l_accepted": {
            "mean": round(sum(rouge) / len(rouge), 4) if rouge else None,
            "max": max(rouge) if rouge else None,
        },
        "leading_verbs": verbs.most_common(20),
    }


def _plot(store: Store, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accepted = [t["max_rouge_l"] for t in store.tasks]
    too_close = [r["max_rouge_l"] for r in store.rejected if r.get("reason") == "rouge_l"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = [i / 20 for i in range(21)]
    ax.hist([accepted, too_close], bins=bins, stacked=True, label=["accepted", "rejected (ROUGE-L)"])
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlabel("ROUGE-L with the most similar instruction in the pool")
    ax.set_ylabel("instructions")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _stats_markdown(stats: dict) -> str:
    lines = [
        "# Synth stats",
        "",
        f"- seeds: {stats['seeds']}",
        f"- candidates generated: {stats['candidates']}",
        f"- accepted tasks: {stats['accepted_tasks']} ({stats['classification_tasks']} classification), "
        f"instances: {stats['accepted_instances']}",
        "",
        "| instruction filter | rejected |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in stats["rejected_by_instruction_filter"].items()),
        *(
            f"| {k} (after instance generation) | {v} |"
            for k, v in stats["rejected_tasks_after_instances"].items()
        ),
        "",
        "| instance filter | dropped |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in stats["instances_dropped"].items()),
        "",
        "| leading verb | count |",
        "|---|---|",
        *(f"| {w} | {n} |" for w, n in stats["leading_verbs"]),
    ]
    if stats.get("runs"):
        lines += ["", "| invocation | seconds | accepted | prompts sent |", "|---|---|---|---|"]
        lines += [
            f"| {i} | {r['seconds']} | {r['accepted']} | {r['prompts_sent']} |"
            for i, r in enumerate(stats["runs"], 1)
        ]
    return "\n".join(lines) + "\n"


def write_report(store: Store, cfg: SynthConfig, seeds_count: int, run_info: dict | None = None) -> dict:
    """stats.json, stats.md and plots/rouge_l.png in the output folder (previous invocations kept)."""
    stats = compute_stats(store, seeds_count)
    old = store.folder / "stats.json"
    runs = []
    if old.exists():
        try:
            runs = json.loads(old.read_text(encoding="utf-8")).get("runs", [])
        except (json.JSONDecodeError, AttributeError):
            runs = []
    if run_info:
        runs.append(run_info)
    stats["runs"] = runs
    stats["total_seconds"] = round(sum(r["seconds"] for r in runs), 1)
    write_json(old, stats)
    write_text(store.folder / "stats.md", _stats_markdown(stats))
    _plot(store, cfg.filters.rouge_threshold, store.folder / "plots" / "rouge_l.png")
    return stats


# ---------------------------------------------------------------- entry point
def build_backend(cfg: SynthConfig) -> Backend:
    from .backends import LocalBackend, OpenAIBackend

    b = cfg.backend
    if b.type == "local":
        return LocalBackend(
            b.model, batch_size=b.batch_size, chat=b.chat, repetition_penalty=b.repetition_penalty,
            dtype=b.dtype,
        )  # fmt: skip
    return OpenAIBackend(
        b.base_url,
        b.model,
        api_key_env=b.api_key_env,
        chat=b.chat,
        concurrency=b.concurrency,
        timeout_s=b.timeout_s,
        max_retries=b.max_retries,
        backoff_s=b.backoff_s,
    )


def run_synth(cfg: SynthConfig, backend: Backend | None = None, progress: bool = True) -> Path:
    """Generate until `cfg.target` tasks are accepted (resuming `cfg.output`); return the output folder."""
    from tqdm.auto import tqdm

    seeds = load_seeds(cfg.seeds, cfg.max_seeds, cfg.seed)
    folder = Path(cfg.output)
    store = Store(folder)
    write_text(folder / "config.yaml", synth_config_to_yaml(cfg))
    backend = backend if backend is not None else build_backend(cfg)
    synth = Synthesizer(cfg, backend, seeds, store)
    start, start_count = time.time(), len(store.tasks)
    bar = tqdm(total=cfg.target, initial=min(start_count, cfg.target), disable=not progress, desc="tasks")
    # `kill` (SIGTERM) unwinds like Ctrl-C so the report below still records this invocation.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        while len(store.tasks) < cfg.target and (cfg.max_rounds is None or synth.rounds < cfg.max_rounds):
            got = synth.round()
            bar.update(got)
            bar.set_postfix(rejected=len(store.rejected), rounds=synth.rounds)
    finally:
        bar.close()
        info = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
            "seconds": round(time.time() - start, 1),
            "accepted": len(store.tasks) - start_count,
            "rounds": synth.rounds,
            "prompts_sent": synth.prompts_sent,
        }
        write_report(store, cfg, len(seeds), info)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return folder


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)
