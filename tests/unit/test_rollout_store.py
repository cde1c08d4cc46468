"""Rollouts in a real SQLite metadata store: one active rollout per pipeline, a retried create
that changes nothing, and compare-and-set on `revision` that no writer (the controller, a
person's pause, a restarted runner) can slip past, not even two at the same instant."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mlplatform.metadata.store import MetadataStore
from mlplatform.rollout import controller
from mlplatform.rollout.plan import RolloutSpec
from mlplatform.rollout.state import RolloutState
from mlplatform.rollout.store import RolloutConflict, RolloutInProgress, RolloutStore

T0 = dt.datetime(2024, 5, 1, 12, 0)
PLAN = RolloutSpec.model_validate({"strategy": "canary", "steps": [10, 50], "interval": "1m"})


@pytest.fixture
def store(tmp_path: Path) -> RolloutStore:
    return RolloutStore(MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}"))


def begin(rollout_id: str = "r1", pipeline: str = "churn", *, challenger: str = "2",
          now: dt.datetime = T0) -> RolloutState:
    return controller.start(PLAN, rollout_id=rollout_id, pipeline=pipeline, model_name=f"{pipeline}-model",
                            champion="1", challenger=challenger, run_id=f"run-{rollout_id}", now=now)


def finish(store: RolloutStore, state: RolloutState, status: str = "promoted") -> RolloutState:
    """End a rollout the way the controller does (a stored decision), not settled yet."""
    return store.save(state.model_copy(update={"status": status, "phase": "done",
                                               "weight": 100 if status == "promoted" else 0}))


def race(*writers: Callable[[], RolloutState]) -> tuple[list[RolloutState], list[BaseException]]:
    """Run the writers in threads released at the same instant; what each returned or raised."""
    barrier = threading.Barrier(len(writers))
    won: list[RolloutState] = []
    lost: list[BaseException] = []
    lock = threading.Lock()

    def run(write: Callable[[], RolloutState]) -> None:
        barrier.wait()
        try:
            out = write()
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted on
            with lock:
                lost.append(exc)
        else:
            with lock:
                won.append(out)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return won, lost


def test_create_stores_revision_1_and_reads_back_the_same_state(store: RolloutStore) -> None:
    state = begin()
    assert state.revision == 0
    stored = store.create(state)
    assert stored.revision == 1
    again = store.get("r1")
    assert again == stored
    assert store.active("churn") == stored
    assert again is not None and again.plan == PLAN.model_dump(mode="json")
    assert [e.action for e in again.timeline] == ["start"]


def test_a_second_rollout_of_the_pipeline_is_refused_naming_the_first(store: RolloutStore) -> None:
    store.create(begin("r1"))
    with pytest.raises(RolloutInProgress) as info:
        store.create(begin("r2", challenger="3"))
    message = info.value.message
    assert "r1" in message and "'churn'" in message and "v2" in message, message
    assert "platformctl rollout abort churn" in message
    assert info.value.exit_code == 2
    assert store.get("r2") is None
    # Another pipeline is not affected.
    assert store.create(begin("r3", pipeline="fraud")).revision == 1


def test_a_paused_rollout_still_blocks_a_new_one(store: RolloutStore) -> None:
    first = store.create(begin("r1"))
    store.save(controller.pause(first, by="me@host", reason="look", now=T0))
    with pytest.raises(RolloutInProgress, match="r1"):
        store.create(begin("r2"))


def test_creating_the_same_rollout_again_returns_it(store: RolloutStore) -> None:
    """A retried rollout step creates nothing new, and gets the state as it is now."""
    stored = store.create(begin("r1"))
    assert store.create(begin("r1")) == stored
    moved = store.save(stored.model_copy(update={"weight": 50, "step": 1}))
    again = store.create(begin("r1"))
    assert again == moved and again.revision == 2 and again.weight == 50
    assert len(store.list("churn")) == 1


def test_creating_a_finished_rollout_again_returns_it_rather_than_blaming_another(
        store: RolloutStore) -> None:
    done = finish(store, store.create(begin("r1")))
    assert store.create(begin("r1")) == done


def test_a_stale_revision_is_a_conflict_and_changes_nothing(store: RolloutStore) -> None:
    read_by_controller = store.create(begin())
    read_by_person = store.get("r1")
    assert read_by_person is not None
    paused = store.save(controller.pause(read_by_person, by="me@host", reason="look", now=T0))
    assert paused.revision == 2
    # The controller's decision, made on revision 1, comes second.
    advanced = read_by_controller.model_copy(update={"step": 1, "weight": 50})
    with pytest.raises(RolloutConflict) as info:
        store.save(advanced)
    assert "revision 1" in info.value.message and "revision 2 (paused)" in info.value.message
    now = store.get("r1")
    assert now == paused
    assert now is not None and now.weight == 10 and now.status == "paused"
    # Re-read and retried, it goes through on top of the person's change.
    retried = store.save(now.model_copy(update={"reason": "retried"}))
    assert retried.revision == 3 and retried.status == "paused"


def test_a_save_of_a_rollout_never_created_is_a_conflict(store: RolloutStore) -> None:
    with pytest.raises(RolloutConflict, match="gone"):
        store.save(begin("ghost"))
    assert store.get("ghost") is None


def test_save_returns_the_stored_copy_with_the_next_revision(store: RolloutStore) -> None:
    stored = store.create(begin())
    saved = store.save(stored.model_copy(update={"weight": 50}))
    assert saved.revision == stored.revision + 1 and saved.weight == 50
    assert store.get("r1") == saved


def test_two_writers_of_the_same_revision_exactly_one_wins(store: RolloutStore) -> None:
    stored = store.create(begin())
    paused = controller.pause(stored, by="me@host", reason="look", now=T0)
    advanced = stored.model_copy(update={"step": 1, "weight": 50})
    for _ in range(5):  # the race, several times over
        current = store.get("r1")
        assert current is not None
        a = paused.model_copy(update={"revision": current.revision})
        b = advanced.model_copy(update={"revision": current.revision})
        won, lost = race(lambda a=a: store.save(a), lambda b=b: store.save(b))
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        assert isinstance(lost[0], RolloutConflict), lost[0]
        after = store.get("r1")
        assert after == won[0] and after.revision == current.revision + 1


def test_two_rollouts_created_at_once_for_one_pipeline_only_one_is_stored(store: RolloutStore) -> None:
    won, lost = race(lambda: store.create(begin("ra")), lambda: store.create(begin("rb", challenger="3")))
    assert len(won) == 1 and len(lost) == 1, (won, lost)
    assert isinstance(lost[0], RolloutInProgress), lost[0]
    assert won[0].id in lost[0].message  # names the one that got there first
    assert [s.id for s in store.list("churn")] == [won[0].id]


def test_the_same_rollout_created_twice_at_once_is_stored_once(store: RolloutStore) -> None:
    won, lost = race(lambda: store.create(begin("r1")), lambda: store.create(begin("r1")))
    assert not lost, lost
    assert len(won) == 2 and won[0] == won[1]
    assert len(store.list("churn")) == 1


@pytest.mark.parametrize("status", ["promoted", "rolled_back", "aborted"])
def test_after_a_rollout_finishes_a_new_one_can_start(store: RolloutStore, status: str) -> None:
    finish(store, store.create(begin("r1")), status)
    assert store.active("churn") is None
    second = store.create(begin("r2", challenger="3", now=T0 + dt.timedelta(hours=1)))
    assert second.revision == 1
    assert store.active("churn") == second
    assert store.latest("churn") == second
    # And the third is refused while the second runs, naming the second.
    with pytest.raises(RolloutInProgress, match="r2"):
        store.create(begin("r3", challenger="4", now=T0 + dt.timedelta(hours=2)))


def test_unsettled_is_the_finished_rollout_until_its_decision_is_applied(store: RolloutStore) -> None:
    assert store.unsettled("churn") is None
    running = store.create(begin("r1"))
    assert store.unsettled("churn") == running  # an active one is unsettled
    done = finish(store, running)
    assert store.active("churn") is None
    unsettled = store.unsettled("churn")
    assert unsettled == done and unsettled.status == "promoted" and not unsettled.settled
    settled = store.save(done.model_copy(update={"settled": True}))
    assert store.unsettled("churn") is None
    assert store.latest("churn") == settled  # still there to look at


def test_unsettled_prefers_the_active_rollout_and_ignores_older_ones(store: RolloutStore) -> None:
    old = finish(store, store.create(begin("r1")), "rolled_back")
    store.save(old.model_copy(update={"settled": True}))
    new = store.create(begin("r2", challenger="3", now=T0 + dt.timedelta(hours=1)))
    assert store.unsettled("churn") == new
    assert store.unsettled("fraud") is None


def test_list_is_newest_first_and_filters(store: RolloutStore) -> None:
    hour = dt.timedelta(hours=1)
    a = finish(store, store.create(begin("a", now=T0)), "rolled_back")
    store.create(begin("x", pipeline="fraud", now=T0 + hour))
    b = finish(store, store.create(begin("b", challenger="3", now=T0 + 2 * hour)))
    c = store.create(begin("c", challenger="4", now=T0 + 3 * hour))
    assert [s.id for s in store.list()] == ["c", "b", "x", "a"]
    assert [s.id for s in store.list("churn")] == ["c", "b", "a"]
    assert [s.id for s in store.list("churn", limit=2)] == ["c", "b"]
    assert [s.id for s in store.list(active_only=True)] == ["c", "x"]
    assert store.list("nobody") == []
    listed = {s.id: s for s in store.list("churn")}
    assert listed["a"] == a and listed["b"] == b and listed["c"] == c  # each at its stored revision
