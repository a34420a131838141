"""The relay of a streamed answer: coalesced pieces, a restart sent whole, no loss."""

from __future__ import annotations

from actors.llm.answer_relay import AnswerRelay


async def test_pieces_are_coalesced_and_end_with_everything_sent():
    sent: list[tuple[int, str]] = []
    relay = AnswerRelay(lambda attempt, piece: sent.append((attempt, piece)), interval_s=3600)
    for text in ("The", "The an", "The answer", "The answer is 42."):
        await relay.update(text)
    assert sent == [(1, "The")]  # the first piece at once, the rest waits for the interval
    await relay.flush()
    assert "".join(p for _, p in sent) == "The answer is 42."


async def test_a_writer_that_starts_over_is_sent_whole_under_the_next_attempt():
    sent: list[tuple[int, str]] = []
    relay = AnswerRelay(lambda attempt, piece: sent.append((attempt, piece)), interval_s=0)
    await relay.update("First try")
    await relay.update("Second")  # not a continuation: a retried call
    await relay.update("Second try")
    assert sent == [(1, "First try"), (2, "Second"), (2, " try")]


async def test_a_piece_that_could_not_be_sent_goes_with_the_next():
    sent: list[str] = []
    failures = [RuntimeError("orchestrator restarting")]

    def send(attempt: int, piece: str) -> None:
        if failures:
            raise failures.pop()
        sent.append(piece)

    relay = AnswerRelay(send, interval_s=0)
    await relay.update("Hello")  # fails: not raised to the writer
    await relay.update("Hello world")
    assert sent == ["Hello world"]
