"""The in-process memory of stored event ids: a repeat within the TTL is found, and an id
is never reported for a project that did not store it (that would drop its event)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracerelay.server.dedup import SeenIds

PROJECTS = st.sampled_from(["a", "b"])
IDS = st.lists(st.sampled_from([f"{n:026d}" for n in range(12)]), max_size=6)
STEPS = st.lists(
    st.tuples(st.sampled_from(["seen", "remember", "wait"]), PROJECTS, IDS, st.integers(0, 40)),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(STEPS, st.integers(1, 20))
def test_seen_answers_as_a_plain_record_of_stored_ids_would(steps, capacity) -> None:
    now = [0.0]
    seen = SeenIds(capacity=capacity, ttl=30.0, clock=lambda: now[0])
    stored: dict[str, tuple[str, float]] = {}  # id → the project that last stored it, when
    for action, project, ids, wait in steps:
        if action == "wait":
            now[0] += wait
        elif action == "remember":
            seen.remember(project, ids)
            stored.update(dict.fromkeys(ids, (project, now[0])))
        else:
            found = seen.seen(project, ids)
            fresh = {i for i in ids if i in stored and stored[i][0] == project
                     and now[0] - stored[i][1] < 30.0}  # fmt: skip
            assert found <= fresh  # never a repeat that is not one
            if len(stored) <= capacity:
                assert found == fresh  # with room for every id, every repeat is found
        assert len(seen._ids) <= capacity


def test_the_oldest_ids_make_room_and_a_repeat_is_remembered_anew() -> None:
    seen = SeenIds(capacity=3, ttl=100.0, clock=lambda: 0.0)
    seen.remember("p", ["1", "2", "3"])
    seen.remember("p", ["1"])  # stored again: now the newest
    seen.remember("p", ["4"])  # evicts "2", the oldest
    assert seen.seen("p", ["1", "2", "3", "4"]) == {"1", "3", "4"}
    assert seen.seen("q", ["1", "3", "4"]) == set()
