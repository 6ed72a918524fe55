"""fedkd-supernode: Flower's SuperNode loop with its sleeps capped, everything else Flower's."""

import importlib
import time
import types

import pytest

from fedkd.supernode import LOOP_MODULE, CappedSleep, cap_polling, main


def test_sleeps_are_capped_and_the_rest_of_time_is_times():
    capped = CappedSleep(0.05)
    start = time.monotonic()
    capped.sleep(3)  # Flower's idle wait
    assert time.monotonic() - start < 1.0
    assert capped.monotonic is time.monotonic and capped.time is time.time
    with pytest.raises(ValueError, match="positive"):
        CappedSleep(0)


def test_flowers_loop_is_the_one_this_was_written_against():
    """Guards a Flower upgrade: its SuperNode loop still sleeps through its module's `time`."""
    loop = importlib.import_module(LOOP_MODULE)
    saved = loop.time
    try:
        cap_polling(loop, 0.5)
        assert isinstance(loop.time, CappedSleep) and loop.time.cap == 0.5
    finally:
        loop.time = saved


def test_a_loop_that_sleeps_otherwise_is_refused_not_silently_left_at_3s():
    other = types.ModuleType("flwr.supernode.start_client_internal")
    other.start_client_internal = lambda: None
    with pytest.raises(RuntimeError, match="flower-supernode instead"):
        cap_polling(other, 0.5)


def test_a_non_positive_interval_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["--poll-interval", "0", "--insecure"])
    assert exit_info.value.code == 2
