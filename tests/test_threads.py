"""Threads that fit the machine: the user's choice wins, else the CPUs the process may use that
other processes do not keep busy; waiting OpenMP threads spin briefly, then sleep."""

import os
import subprocess
import sys
import time

import pytest

from synth.common import threads


def test_the_users_choice_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads() == 1
    assert threads.choose_threads(3) == 3  # --threads over the environment
    with pytest.raises(ValueError, match="at least 1"):
        threads.choose_threads(0)


def test_the_cpus_left_free_by_other_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1)
    assert threads.choose_threads() == 3
    monkeypatch.setattr(threads, "busy_cpus", lambda: 9)
    assert threads.choose_threads() == 1  # never none
    # a count this product chose earlier is chosen again, not taken for the user's
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(threads.CHOSEN, "1")
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0)
    assert threads.choose_threads() == 4


def test_a_cgroup_quota_caps_the_cpus(monkeypatch):
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.available_cpus() == len(os.sched_getaffinity(0))


def test_a_cpu_bound_neighbour_is_seen():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.busy_cpus() >= 1
    finally:
        busy.kill()
        busy.wait()


def test_use_threads_sets_torch_and_the_environment(monkeypatch):
    import torch

    for name in (*threads.THREAD_VARIABLES, "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", threads.CHOSEN):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert os.environ["GOMP_SPINCOUNT"] == threads.SHORT_SPIN  # a short spin first: small ops stay fast
    finally:
        torch.set_num_threads(before)


def test_the_threads_that_fit_beside_other_work():
    assert threads.threads_beside(0.0, 2) == 2
    assert threads.threads_beside(0.3, 4) == 4  # a passing process is not a neighbour
    assert threads.threads_beside(0.8, 2) == 1  # a CPU-bound one that shared the cores with us
    assert threads.threads_beside(5.0, 2) == 1  # never none


def test_a_neighbour_that_comes_and_goes_is_followed(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads._watch, "owner", os.getpid())
    monkeypatch.setattr(threads._watch, "last", None)
    try:
        assert threads.follow_neighbours(0.0) is None  # the first look only starts the count
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)
            threads.follow_neighbours(0.0)
            beside = torch.get_num_threads()
            assert beside <= 3
        finally:
            busy.kill()
            busy.wait()
        time.sleep(1.0)
        threads.follow_neighbours(0.0)
        assert torch.get_num_threads() > beside  # the cores it left are taken back
        assert threads.follow_neighbours(60.0) is None  # too soon to look again
    finally:
        torch.set_num_threads(before)


def test_the_users_count_is_not_followed(monkeypatch):
    import torch

    for name in (*threads.THREAD_VARIABLES, "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", threads.CHOSEN):
        monkeypatch.delenv(name, raising=False)  # use_threads sets them; monkeypatch puts them back
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    try:
        threads.use_threads(None)  # OMP_NUM_THREADS=2 is the user's
        assert threads._watch.owner is None
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv(threads.CHOSEN, "1")
        threads.use_threads(None)  # a count this product chose is followed
        assert threads._watch.owner == os.getpid()
        threads.use_threads(1)
        assert threads._watch.owner is None
        monkeypatch.setattr(threads, "threads_beside", lambda others, cpus: 3)  # as if the machine had room
        threads._watch.last = (time.monotonic() - 10.0, 0.0, 0.0)
        assert threads.follow_neighbours(0.0) is None and torch.get_num_threads() == 1
    finally:
        threads._watch.owner = None
        torch.set_num_threads(before)
