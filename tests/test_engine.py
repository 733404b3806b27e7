"""The inference engine (decoding options, left-padded batches, stop strings) and chat history truncation."""

from __future__ import annotations

import pytest
import torch

from lmadapt.infer.chat import ChatSession, run_chat, truncate_history
from lmadapt.infer.engine import Engine, cut_at_stop, load_engine
from tiny_lm import save_tiny, tiny_llama, tiny_tokenizer

PROMPTS = ["the cat", "hello how are you today? I am", "one two three four five six", "paris"]


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    return Engine(tiny_llama(tok), tok)


def manual_greedy_ids(engine, prompt: str, n: int) -> list[int]:
    """Reference greedy decoding: one unpadded forward per new token, argmax, stop at EOS."""
    ids = engine.encode(prompt)
    eos = set(engine._eos_ids())
    new = []
    with torch.no_grad():
        for _ in range(n):
            logits = engine.model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt in eos:
                break
            new.append(nxt)
    return new


def manual_greedy(engine, prompt: str, n: int) -> str:
    return engine.tokenizer.decode(manual_greedy_ids(engine, prompt, n), skip_special_tokens=True)


def sequence_log_prob(engine, prompt: str, new: list[int]) -> float:
    """Sum of the model's log-probabilities of the tokens `new` after `prompt` (what beam search maximises)."""
    ids = engine.encode(prompt)
    with torch.no_grad():
        log_probs = engine.model(input_ids=torch.tensor([ids + new])).logits[0].log_softmax(-1)
    return sum(float(log_probs[len(ids) - 1 + k, t]) for k, t in enumerate(new))


def test_batched_left_padded_greedy_matches_one_by_one(engine):
    batched = engine.generate(PROMPTS, max_new_tokens=10, batch_size=4)
    assert batched == [manual_greedy(engine, p, 10) for p in PROMPTS]
    assert engine.generate(PROMPTS, max_new_tokens=10, batch_size=3) == batched  # order restored


def test_sampling_is_seeded_and_top_k_1_is_greedy(engine):
    sampled = engine.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    assert engine.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=3) == sampled
    others = [
        engine.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, seed=s) for s in (4, 5)
    ]
    assert any(o != sampled for o in others)
    greedy = engine.generate(PROMPTS, max_new_tokens=8)
    assert engine.generate(PROMPTS, max_new_tokens=8, do_sample=True, top_k=1, seed=9) == greedy
    assert engine.generate(PROMPTS, max_new_tokens=8, do_sample=True, top_p=1e-6, seed=9) == greedy


def test_beam_search_and_repetition_penalty(engine):
    beams = engine.generate(PROMPTS[:2], max_new_tokens=6, num_beams=3)
    assert len(beams) == 2 and all(isinstance(b, str) for b in beams)
    for prompt, text in zip(PROMPTS[:2], beams, strict=True):
        ids = torch.tensor([engine.encode(prompt)])
        with torch.no_grad():  # the best beam of an unpadded, one-prompt beam search
            direct = engine.model.generate(
                ids, attention_mask=torch.ones_like(ids), num_beams=3, max_new_tokens=6, do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id, eos_token_id=engine._eos_ids(),
            )  # fmt: skip
        best = direct[0, ids.shape[1] :].tolist()
        assert text == engine.tokenizer.decode(best, skip_special_tokens=True)
        greedy_ids = manual_greedy_ids(engine, prompt, 6)
        assert text != manual_greedy(engine, prompt, 6)  # the beams found another, likelier continuation
        assert sequence_log_prob(engine, prompt, best) > sequence_log_prob(engine, prompt, greedy_ids)
    greedy = engine.generate(PROMPTS, max_new_tokens=16)
    penalised = engine.generate(PROMPTS, max_new_tokens=16, repetition_penalty=5.0)
    assert penalised != greedy  # a random tiny model repeats itself; the penalty changes that

    def repeats(text):
        ids = engine.tokenizer(text)["input_ids"]
        return len(ids) - len(set(ids))

    assert sum(map(repeats, penalised)) < sum(map(repeats, greedy))


def test_stop_strings_cut_the_output(engine):
    full = engine.generate(PROMPTS, max_new_tokens=16)
    stops = [o[2:4] for o in full if len(o) > 4]
    cut = engine.generate(PROMPTS, max_new_tokens=16, stop=stops)
    for f, c in zip(full, cut, strict=True):
        assert f.startswith(c) and not any(s in c for s in stops)
    assert cut_at_stop("abc\ndef", ["\n", "zz"]) == "abc"


def test_messages_use_the_chat_template_and_load_engine_reads_a_folder(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    eng = load_engine(str(folder), dtype="float32")
    msgs = [{"role": "user", "content": "hello"}]
    assert eng.prompt_text(msgs) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert eng.generate([msgs], max_new_tokens=5) == eng.generate([eng.prompt_text(msgs)], max_new_tokens=5)


def test_truncate_history_keeps_system_and_newest_turns():
    msgs = [{"role": "system", "content": "S"}]
    for i in range(6):
        msgs += [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
    msgs.append({"role": "user", "content": "u6"})

    def count(ms):
        return 10 * len(ms)  # every message costs 10 tokens

    kept = truncate_history(msgs, count, limit=55)
    assert kept[0] == {"role": "system", "content": "S"}
    assert [m["content"] for m in kept] == ["S", "u5", "a5", "u6"]
    assert count(kept) <= 55
    assert truncate_history(msgs, count, limit=10_000) == msgs
    assert [m["content"] for m in truncate_history(msgs, count, limit=1)] == [
        "S",
        "u6",
    ]  # never the last turn


def test_chat_session_stays_within_the_context(engine):
    limit = 64
    engine.model.config.max_position_embeddings = limit
    try:
        session = ChatSession(engine, system="you are a helpful bot", max_new_tokens=8)
        for i in range(12):
            session.ask(f"hello how are you today {i}")
            prompt = session.messages[:-1]
            assert len(engine.encode(prompt)) <= limit - 8
            assert session.messages[0]["content"] == "you are a helpful bot"
            assert prompt[-1]["content"] == f"hello how are you today {i}"
        assert len(session.messages) < 2 * 12  # the oldest turns were dropped
    finally:
        engine.model.config.max_position_embeddings = 256


def test_run_chat_reads_lines_with_reset_and_exit(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    said = []
    session = run_chat(
        str(folder), "sys", 4, lines=["hi", "there", "/reset", "again", "/exit", "never"], write=said.append
    )
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant"]
    assert session.messages[1]["content"] == "again"
    assert "(history cleared)" in said and sum(s.startswith("assistant>") for s in said) == 3


def test_a_sequence_joining_a_running_batch_decodes_as_it_would_alone(engine):
    """Continuous batching: rows that join mid-run (their cache left-padded to the batch) and rows that leave
    early give the same greedy tokens as each prompt decoded alone."""
    from lmadapt.infer.decode import DecodeBatch

    alone = [manual_greedy_ids(engine, p, 12) for p in PROMPTS]
    seqs = [engine.sequence(engine.encode(p), engine.decoding(max_new_tokens=12)) for p in PROMPTS]
    batch = DecodeBatch(engine.model, engine.tokenizer.pad_token_id)
    batch.add(seqs[:1])
    for _ in range(3):
        batch.step()
    batch.add(seqs[1:3])  # join after three steps
    batch.step()
    batch.add(seqs[3:])
    seqs[1].cancel()  # leaves at the next step; the others go on
    while len(batch):
        batch.step()
    assert seqs[1].finish_reason == "cancelled"
    for i in (0, 2, 3):
        assert seqs[i].new_ids == alone[i][: len(seqs[i].new_ids)]
        assert seqs[i].finish_reason == ("length" if len(alone[i]) == 12 else "stop")
        assert seqs[i].new_ids == alone[i]


def test_streamed_deltas_never_show_a_stop_string_or_its_start(engine):
    full = engine.generate([PROMPTS[1]], max_new_tokens=16)[0]
    stop = full[3:6]
    seq = engine.sequence(engine.encode(PROMPTS[1]), engine.decoding(max_new_tokens=16, stop=[stop]))
    from lmadapt.infer.decode import DecodeBatch

    batch = DecodeBatch(engine.model, engine.tokenizer.pad_token_id)
    batch.add([seq])
    shown = []
    while len(batch):
        shown += [d for _, d in batch.step()]
    assert "".join(shown) == full[: full.index(stop)] == seq.text
    assert seq.finish_reason == "stop"


def test_decoding_past_the_caches_preallocated_room_matches_one_by_one(engine, monkeypatch):
    """The KV cache writes in place into buffers with spare room and reallocates when it runs out: across
    several reallocations, with rows joining and leaving, greedy tokens equal decoding each prompt alone."""
    from lmadapt.infer import kv
    from lmadapt.infer.decode import DecodeBatch

    monkeypatch.setattr(kv, "ROOM", 3)  # a reallocation every 3 steps instead of every 128
    alone = [manual_greedy_ids(engine, p, 20) for p in PROMPTS]
    seqs = [engine.sequence(engine.encode(p), engine.decoding(max_new_tokens=20)) for p in PROMPTS]
    batch = DecodeBatch(engine.model, engine.tokenizer.pad_token_id)
    batch.add(seqs[:2])
    for _ in range(5):
        batch.step()
    batch.add(seqs[2:])  # joins mid-room
    for _ in range(4):
        batch.step()
    seqs[0].cancel()
    while len(batch):
        batch.step()
    for i in (1, 2, 3):
        assert seqs[i].new_ids == alone[i]
    assert seqs[0].new_ids == alone[0][: len(seqs[0].new_ids)]


def test_roomy_layer_writes_in_place_until_its_room_runs_out():
    from lmadapt.infer.kv import ROOM, RoomyCache

    cache = RoomyCache()
    k = torch.randn(2, 3, 5, 4)
    keys, _ = cache.update(k, k + 1, 0)
    buffer = cache.layers[0]._k
    assert torch.equal(keys, k) and buffer.shape[-2] == 5 + ROOM
    for _ in range(ROOM):
        new = torch.randn(2, 3, 1, 4)
        keys, values = cache.update(new, new + 1, 0)
        assert torch.equal(keys[:, :, -1:], new) and torch.equal(values[:, :, :5], k + 1)
    assert cache.layers[0]._k is buffer  # ROOM appends: no new buffer
    cache.update(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4), 0)
    assert cache.layers[0]._k is not buffer and cache.get_seq_length() == 5 + ROOM + 1
    assert torch.equal(cache.layers[0].keys[:, :, :5], k)
