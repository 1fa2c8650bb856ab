"""One GenAI call, one charge: CallDedupe."""

from __future__ import annotations

import threading

from otelcost.costing._calls import CallDedupe


def call(response_id: str | None, input_tokens: int = 100) -> dict[str, object]:
    attrs: dict[str, object] = {"gen_ai.usage.input_tokens": input_tokens}
    if response_id is not None:
        attrs["gen_ai.response.id"] = response_id
    return attrs


def test_second_span_of_a_call_is_a_duplicate() -> None:
    dedupe = CallDedupe()
    assert dedupe.first(call("msg_1"), 1_000)
    assert not dedupe.first(call("msg_1"), 1_010)
    assert dedupe.first(call("msg_2"), 1_020)
    assert dedupe.first(call(None), 1_030) and dedupe.first(call(None), 1_030)
    assert dedupe.duplicates == 1


def test_same_id_with_other_usage_or_much_later_is_another_call() -> None:
    dedupe = CallDedupe(window_ms=60_000)
    assert dedupe.first(call("chatcmpl-123", 100), 0)
    assert dedupe.first(call("chatcmpl-123", 200), 0)  # a server that reuses its ids
    assert dedupe.first(call("chatcmpl-123", 100), 60_001)
    assert dedupe.duplicates == 0


def test_memory_is_bounded() -> None:
    dedupe = CallDedupe(size=2)
    for i in range(3):
        assert dedupe.first(call(f"id{i}"), 0)
    assert dedupe.first(call("id0"), 0)  # evicted, so no longer recognised
    assert not dedupe.first(call("id2"), 0)


def test_concurrent_spans_of_one_call_charge_once() -> None:
    dedupe = CallDedupe()
    firsts: list[bool] = []
    barrier = threading.Barrier(8)

    def end() -> None:
        barrier.wait()
        firsts.append(dedupe.first(call("msg_x"), 5))

    threads = [threading.Thread(target=end) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert firsts.count(True) == 1 and dedupe.duplicates == 7
