"""The garbage collector's settings for many long-lived connections (``realtime.server.tune_gc``):
start-up objects frozen, full collections paced by ``PacedFullCollections``."""

from __future__ import annotations

import gc

import pytest

from realtime.server import PacedFullCollections, tune_gc


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def thresholds():
    """A small old generation, as in a server after ``tune_gc``'s freeze (what the test
    process holds would otherwise hide a heap's growth); Python's thresholds and callbacks
    as they were, whatever a test leaves. A hook this process installed before (had it
    imported the ASGI application) is set aside meanwhile."""
    strays = [c for c in gc.callbacks if isinstance(c, PacedFullCollections)]
    PacedFullCollections.uninstall_all()
    saved, callbacks = gc.get_threshold(), list(gc.callbacks)
    gc.freeze()
    gc.collect()
    yield saved
    gc.callbacks[:] = callbacks
    gc.set_threshold(*saved)
    gc.unfreeze()
    for stray in strays:
        stray.install()


class Closes:
    """Connections closed, as ``realtime.server.connections_closed`` counts them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def full_collections() -> int:
    return gc.get_stats()[2]["collections"]


MIDDLE = {"generation": 1, "collected": 0, "uncollectable": 0}


def released_at_a_middle_collection(paced: PacedFullCollections) -> bool:
    paced("stop", MIDDLE)
    return not paced.held


def test_a_full_collection_holds_the_next_for_the_interval_and_a_close(thresholds):
    clock, closes = Clock(), Closes()
    paced = PacedFullCollections(10, clock, closes)
    paced.install()
    assert paced in gc.callbacks
    assert gc.get_threshold() == (*thresholds[:2], PacedFullCollections.HELD)
    closes.count += 1
    clock.now += 9.9
    paced("stop", MIDDLE)
    assert paced.held  # not yet
    paced("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    clock.now += 0.1
    paced("start", MIDDLE)
    assert paced.held  # only a collection's end is looked at
    paced("stop", MIDDLE)
    assert not paced.held and gc.get_threshold() == thresholds  # Python's rule again
    clock.now += 30
    paced("stop", {"generation": 2, "collected": 5, "uncollectable": 0})
    assert paced.held and paced.last_full == clock.now
    clock.now += 30  # the interval passed, but nothing closed since: held
    assert not released_at_a_middle_collection(paced)
    closes.count += 1
    assert released_at_a_middle_collection(paced)
    paced.uninstall()
    assert paced not in gc.callbacks and gc.get_threshold() == thresholds


def test_without_a_close_a_full_collection_waits_at_most_max_wait(thresholds):
    clock = Clock()
    paced = PacedFullCollections(3, clock, Closes())
    paced.install()
    clock.now += PacedFullCollections.MAX_WAIT - 0.1
    assert not released_at_a_middle_collection(paced)
    clock.now += 0.1
    assert released_at_a_middle_collection(paced)
    paced.uninstall()


def test_while_held_a_growing_heap_sets_off_no_full_collection(thresholds):
    """Real collections: with small thresholds a growing heap would set off many full
    collections; held, none until the interval passed and a connection closed (a heap that
    only grows holds no old garbage), then Python's own rule collects."""
    gc.set_threshold(100, 2, 2)
    clock, closes = Clock(), Closes()
    paced = PacedFullCollections(10, clock, closes)
    paced.install()
    kept, before = [], full_collections()

    def grow(n: int) -> None:
        for _ in range(n):  # objects the collector tracks, each in a cycle, all kept
            node: list = []
            node.append(node)
            kept.append(node)

    grow(20_000)
    assert full_collections() == before
    assert gc.get_count()[2] > 2  # Python would have collected many times by now
    clock.now += 10
    grow(20_000)
    assert full_collections() == before  # the interval passed, but nothing closed
    closes.count += 1
    grow(2_000)
    assert full_collections() == before + 1  # once, then held again
    assert paced.held and paced.last_full == clock.now
    paced.uninstall()
    assert gc.get_threshold() == (100, 2, 2)


def test_garbage_a_full_collection_would_free_is_freed_once_the_interval_passed(thresholds):
    gc.set_threshold(100, 2, 2)
    clock, closes = Clock(), Closes()
    paced = PacedFullCollections(5, clock, closes)
    paced.install()
    gc.collect(1)  # what exists now is old: its garbage only a full collection frees
    clock.now += 1  # the full collection above is paced from here
    kept = []
    for _ in range(5_000):
        node: list = []
        node.append(node)
        kept.append(node)
    gc.collect(1)
    gc.collect(1)  # the cycles are in the old generation now
    collected_before = gc.get_stats()[2]["collected"]
    del kept  # 5,000 cycles of garbage in the old generation: a connection closed
    closes.count += 1
    clock.now += 5
    for _ in range(3_000):  # the young collections this sets off release, then collect
        node = []
        node.append(node)
    assert gc.get_stats()[2]["collected"] - collected_before >= 5_000
    paced.uninstall()


@pytest.mark.parametrize(
    "realtime, frozen, paced",
    [
        ({}, True, True),
        ({"GC_FULL_INTERVAL": 0}, True, False),
        ({"GC_TUNING": False}, False, False),
    ],
)
def test_tune_gc_follows_the_settings(settings, thresholds, realtime, frozen, paced):
    settings.REALTIME = realtime
    gc.unfreeze()  # the fixture's freeze: only tune_gc's counts here
    try:
        tune_gc()
        assert (gc.get_freeze_count() > 0) is frozen
        installed = [c for c in gc.callbacks if isinstance(c, PacedFullCollections)]
        assert len(installed) == (1 if paced else 0)
        assert (gc.get_threshold()[2] == PacedFullCollections.HELD) is paced
    finally:
        gc.unfreeze()


def test_tune_gc_called_again_leaves_one_hook_and_python_thresholds_under_it(settings, thresholds):
    settings.REALTIME = {}
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    try:
        tune_gc()
        tune_gc()  # e.g. the application imported twice
        installed = [c for c in gc.callbacks if isinstance(c, PacedFullCollections)]
        assert len(installed) == 1
        assert (installed[0].young, installed[0].middle, installed[0].old) == thresholds
        PacedFullCollections.uninstall_all()
        assert gc.get_threshold() == thresholds
    finally:
        gc.unfreeze()
