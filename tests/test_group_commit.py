"""Writes from many threads committed together (orch.storage.group_commit), with plain threads and items."""

from __future__ import annotations

import threading
from typing import Any

from support import wait_until

from orch.storage.group_commit import GroupCommit


class Writer:
    """Records each group it is given; the first write waits until ``release`` is set, so that the
    submits that arrive meanwhile are seen waiting before any of them can be written."""

    def __init__(self, outcome: Any = None) -> None:
        self.groups: list[list[Any]] = []
        self.release = threading.Event()
        self.outcome = outcome or (lambda item: item * 10)

    def __call__(self, items: list[Any]) -> list[Any]:
        self.groups.append(items)
        if len(self.groups) == 1:
            assert self.release.wait(30)
        return [self.outcome(item) for item in items]


def submit_all(group: GroupCommit[Any, Any], writer: Writer, items: list[Any]) -> list[Any]:
    """The first item submitted alone (its write waits), the rest while it waits; then the write goes on."""
    answers: list[Any] = [None] * len(items)

    def submit(index: int) -> None:
        try:
            answers[index] = group.submit(items[index])
        except BaseException as exc:  # noqa: BLE001 - the answer under test
            answers[index] = exc

    threads = [threading.Thread(target=submit, args=(index,)) for index in range(len(items))]
    threads[0].start()
    wait_until(lambda: len(writer.groups) == 1, 30, "the first write")
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(group._pending) == len(items) - 1, 30, "the other submits waiting")
    writer.release.set()
    for thread in threads:
        thread.join(30)
    return answers


def test_submits_that_wait_share_the_next_write() -> None:
    writer = Writer()
    answers = submit_all(GroupCommit(writer, max_group=64), writer, [1, 2, 3, 4, 5])
    assert answers == [10, 20, 30, 40, 50]
    assert writer.groups[0] == [1] and sorted(writer.groups[1]) == [2, 3, 4, 5] and len(writer.groups) == 2


def test_a_group_is_at_most_max_group_long() -> None:
    writer = Writer()
    submit_all(GroupCommit(writer, max_group=2), writer, [1, 2, 3, 4, 5])
    assert [len(group) for group in writer.groups] == [1, 2, 2]


def test_an_items_own_failure_is_its_answer_only() -> None:
    def outcome(item: int) -> Any:
        return ValueError(f"item {item} refused") if item == 3 else item

    writer = Writer(outcome)
    answers = submit_all(GroupCommit(writer, max_group=64), writer, [1, 2, 3, 4])
    assert answers[:2] == [1, 2] and answers[3] == 4
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "item 3 refused"


class InterruptedOnSecondWrite(Writer):
    def __call__(self, items: list[Any]) -> list[Any]:
        if len(self.groups) == 1:
            self.groups.append(items)
            raise KeyboardInterrupt("interrupted while writing")
        return super().__call__(items)


def test_what_a_write_raises_reaches_its_caller_and_the_rest_is_written_by_the_next() -> None:
    """An interrupt (or a bug) in the thread writing: that thread hears of it, its own item is not written,
    and the others of its group are written by the next thread to lead."""
    writer = InterruptedOnSecondWrite()
    answers = submit_all(GroupCommit(writer, max_group=64), writer, [1, 2, 3, 4])
    interrupted = [index for index, answer in enumerate(answers) if isinstance(answer, KeyboardInterrupt)]
    assert len(interrupted) == 1 and answers[0] == 10
    leader = [1, 2, 3, 4][interrupted[0]]
    assert sorted(writer.groups[1]) == [2, 3, 4] and sorted(writer.groups[2]) == sorted({2, 3, 4} - {leader})
    assert len(writer.groups) == 3
    assert sorted(a for a in answers if not isinstance(a, BaseException)) == [10] + [
        10 * item for item in (2, 3, 4) if item != leader]


def test_one_alone_waits_for_nothing() -> None:
    seen: list[list[int]] = []
    group: GroupCommit[int, int] = GroupCommit(lambda batch: seen.append(batch) or batch, max_group=64)
    assert group.submit(7) == 7 and seen == [[7]]
