"""The JSON line handler: one write per event-loop iteration, nothing lost between loops."""

from __future__ import annotations

import asyncio
import json
import logging

from jwks_mirror.core.logs import JsonFormatter, LineHandler


class Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def logger(stream: Stream) -> logging.Logger:
    log = logging.getLogger(f"test-logs-{id(stream)}")
    handler = LineHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def events(stream: Stream) -> list[str]:
    return [json.loads(line)["event"] for text in stream.writes for line in text.splitlines()]


def test_outside_a_loop_each_line_is_written_at_once() -> None:
    stream = Stream()
    log = logger(stream)
    log.info("one")
    assert events(stream) == ["one"]
    log.info("two")
    assert stream.writes[-1].endswith("\n") and events(stream) == ["one", "two"]


def test_lines_of_one_loop_iteration_leave_in_one_write() -> None:
    stream = Stream()
    log = logger(stream)

    async def main() -> list[str]:
        for name in ("a", "b", "c"):
            log.info(name)
        before = list(stream.writes)
        await asyncio.sleep(0)  # the end of this iteration flushes
        await asyncio.sleep(0)
        return before

    assert asyncio.run(main()) == []
    assert len(stream.writes) == 1 and events(stream) == ["a", "b", "c"]


def test_lines_pending_when_a_loop_closes_are_written_by_the_next_one() -> None:
    stream = Stream()
    log = logger(stream)
    loop = asyncio.new_event_loop()

    async def log_and_leave() -> None:
        log.info("late")  # the flush is scheduled, but the loop closes before running it

    loop.run_until_complete(log_and_leave())
    loop.close()
    written = events(stream)

    async def next_loop() -> None:
        log.info("next")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert "late" in events(stream) and events(stream)[-1] == "next"
    assert written in ([], ["late"])  # run_until_complete may or may not have run the flush
