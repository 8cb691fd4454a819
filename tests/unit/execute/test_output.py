"""Output cut into lines under a shared byte budget, and the launcher's start announcement."""

from __future__ import annotations

from consumers.execute.output import Announcement, Lines, OutputBudget


def test_lines_come_without_their_newline_across_chunk_boundaries() -> None:
    lines = Lines()
    assert lines.feed(b"one\ntw") == [b"one"]
    assert lines.feed(b"o\n\nthree") == [b"two", b""]
    assert lines.finish() == [b"three"]
    assert lines.finish() == []


def test_long_lines_are_cut_at_the_maximum_and_a_line_of_exactly_it_is_kept_whole() -> None:
    lines = Lines(max_bytes=4)
    assert lines.feed(b"abcd\n") == [b"abcd"]
    assert lines.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    assert lines.feed(b"\n") == [b"ij"]
    assert lines.feed(b"abcd") == []  # a newline may still follow
    assert lines.finish() == [b"abcd"]


def test_the_budget_is_shared_and_cuts_the_chunk_that_crosses_it() -> None:
    budget = OutputBudget(10)
    assert budget.take(b"123456") == b"123456"
    assert not budget.exceeded
    assert budget.take(b"7890") == b"7890"
    assert not budget.exceeded  # exactly at the limit is within it
    assert budget.take(b"x") == b""
    assert budget.exceeded
    assert budget.used == 10


def test_a_chunk_past_the_budget_keeps_what_fits() -> None:
    budget = OutputBudget(5)
    assert budget.take(b"abcdefgh") == b"abcde"
    assert (budget.used, budget.exceeded) == (5, True)


def test_the_announcement_is_taken_out_even_when_split_across_chunks() -> None:
    announcement = Announcement(b"token")
    assert announcement.feed(b"to") == b""
    assert announcement.seen is None
    assert announcement.feed(b"ken\nfirst line\n") == b"first line\n"
    assert announcement.seen is True
    assert announcement.feed(b"token\n") == b"token\n"  # only the first line is the launcher's


def test_anything_else_first_means_the_program_never_started() -> None:
    announcement = Announcement(b"token")
    assert announcement.feed(b"bwrap: Can't mkdir") == b"bwrap: Can't mkdir"
    assert announcement.seen is False


def test_a_stream_that_ends_inside_the_announcement_never_started() -> None:
    announcement = Announcement(b"token")
    assert announcement.feed(b"tok") == b""
    assert announcement.finish() == b"tok"
    assert announcement.seen is False
