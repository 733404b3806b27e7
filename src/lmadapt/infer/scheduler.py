"""Continuous batching for a server: one thread decodes every request, new requests join the running batch.

    scheduler = Scheduler(max_batch=16)                  # decodes in a background thread
    scheduler = Scheduler(max_batch=16, start=False)     # or: scheduler.run() on a thread of the caller's
    job = scheduler.submit(target, [engine.sequence(ids, decoding)], on_delta)   # from any thread
    ...                                          # on_delta(seq, text) is called (in the decode thread) per token
    scheduler.cancel(job)                        # e.g. the client went away: its rows leave at the next step

A `Target` is an engine plus what to switch on before its forward passes (a PEFT adapter, or the adapters
off for the base model). Requests for the target the batch runs join it at the next step; a request for
another target waits until the batch drains (PEFT switches adapters per forward pass, not per row), and while
it waits no new rows join the running batch, so it cannot starve. A job never runs wider than `max_batch`:
its rows join as room opens, the rest waiting at the head of the queue (a wide request is split into the
scheduler's batches, in order).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .decode import DecodeBatch, Sequence

__all__ = ["Target", "Job", "Scheduler"]


@dataclass(eq=False)
class Target:
    """What a request runs on: `engine`, and `activate()` (called before a batch for this target starts)."""

    key: str
    engine: object
    activate: Callable[[], None] = lambda: None


@dataclass(eq=False)
class Job:
    target: Target
    sequences: list[Sequence]
    on_delta: Callable[[Sequence, str], None]
    on_error: Callable[[BaseException], None]
    submitted: float = field(default_factory=time.monotonic)
    started: int = 0  # how many of `sequences` joined a batch (in order)

    def cancel(self) -> None:
        for s in self.sequences:
            s.cancel()

    @property
    def done(self) -> bool:
        return all(s.done for s in self.sequences)

    @property
    def unstarted(self) -> list[Sequence]:
        return [s for s in self.sequences[self.started :] if not s.done]


class Scheduler:
    """Runs jobs on one thread; at most `max_batch` rows decode together.

    `start=False` leaves the decoding to whoever calls `run()`: the server decodes on the main thread, where
    the model was loaded, because a second thread doing torch work gets its own OpenMP team and libgomp then
    throttles every team's spin-wait (more threads than cores): the same loop ran at 21-26 tok/s in another
    thread against 35-38 on the main one (docs/performance.md)."""

    def __init__(self, max_batch: int = 16, start: bool = True):
        self.max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._closing = False
        self._stopped = threading.Event()
        self._owner: dict[int, Job] = {}  # id(sequence) -> its job
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self.run, name="lmadapt-decode", daemon=True)
            self._thread.start()

    def submit(self, target: Target, sequences: list[Sequence], on_delta, on_error) -> Job:
        job = Job(target, list(sequences), on_delta, on_error)
        with self._cond:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            self._waiting.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        job.cancel()
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what is waiting or running and stop the decode loop (graceful shutdown's last step); waits
        up to `timeout` s for it unless called from the decoding thread itself."""
        with self._cond:
            self._closing = True
            for job in self._waiting:
                job.cancel()
            for job in self._owner.values():
                job.cancel()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        elif self._thread is None and self._decoder is not threading.current_thread():
            self._stopped.wait(timeout)

    _decoder: threading.Thread | None = None

    def run(self) -> None:
        """The decode loop, until `close()`: call it once, on the thread that should do the torch work."""
        self._decoder = threading.current_thread()
        try:
            self._loop()
        finally:
            self._stopped.set()

    # ---------------------------------------------------------------- the decode thread
    def _admit(
        self, batch: DecodeBatch | None, target: Target | None
    ) -> tuple[list[tuple[Job, list[Sequence]]], Target | None]:
        """(job, rows) to start now (the caller holds the lock): for the running target, rows of the jobs
        queued before any job for another target, as many as the batch has room for; with no batch running,
        the oldest job's target. A job whose rows do not all fit stays at the head with the rest."""
        while self._waiting and not self._waiting[0].unstarted:  # cancelled (or drained) before it started
            self._waiting.popleft()
        if not self._waiting:
            return [], target
        if batch is None or not len(batch):
            target = self._waiting[0].target
        room = self.max_batch - (len(batch) if batch is not None else 0)
        start = []
        while self._waiting and self._waiting[0].target is target and room > 0:
            job = self._waiting[0]
            rows = job.unstarted[:room]
            job.started = job.sequences.index(rows[-1]) + 1 if rows else len(job.sequences)
            if rows:
                start.append((job, rows))
                room -= len(rows)
            if not job.unstarted:
                self._waiting.popleft()
        return start, target

    def _loop(self) -> None:
        batch: DecodeBatch | None = None
        target: Target | None = None
        while True:
            with self._cond:
                while not self._waiting and (batch is None or not len(batch)) and not self._closing:
                    self._cond.wait()
                if self._closing and (batch is None or not len(batch)):
                    return
                previous = target
                start, target = self._admit(batch, target)
                for job, rows in start:
                    for s in rows:
                        self._owner[id(s)] = job
            try:
                if start and (batch is None or not len(batch) or target is not previous):
                    target.activate()
                    engine = target.engine
                    batch = DecodeBatch(engine.model, engine.tokenizer.pad_token_id)
                if start:
                    batch.add([s for _, rows in start for s in rows])
                for s in batch.drop_cancelled():
                    self._owner.pop(id(s), None)
                for seq, _ in batch.step(emit=self._emit):
                    if seq.done:  # also a row cancelled after its delta went out: it left the batch just now
                        self._owner.pop(id(seq), None)
            except Exception as exc:  # a failed forward fails the requests in it, not the server
                self._fail(batch, start, exc)
                batch = None

    def _emit(self, deltas: list[tuple[Sequence, str]]) -> None:
        for seq, delta in deltas:
            job = self._owner.get(id(seq))
            if job is None:
                continue
            if seq.done:
                self._owner.pop(id(seq), None)
            if delta or seq.done:
                job.on_delta(seq, delta)

    def _fail(self, batch: DecodeBatch | None, start: list, exc: BaseException) -> None:
        jobs = {id(j): j for j, _ in start}
        for s in batch.sequences if batch is not None else []:
            job = self._owner.pop(id(s), None)
            if job is not None:
                jobs[id(job)] = job
        for job in jobs.values():
            job.cancel()
            job.on_error(exc)
