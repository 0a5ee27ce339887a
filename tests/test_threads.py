"""Threads that fit the machine: the user's choice wins, else the CPUs the process may use that
other processes do not keep busy; waiting OpenMP threads sleep instead of spinning."""

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

    for name in (*threads.THREAD_VARIABLES, "OMP_WAIT_POLICY", threads.CHOSEN):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    finally:
        torch.set_num_threads(before)
