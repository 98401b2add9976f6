"""The suite on several processes (pytest-xdist; ``-n auto --dist loadgroup`` in pyproject.toml).

* ``-n auto`` starts one worker per CPU this process may use; none on a 1-CPU machine or for a single
  file (then the tests run in this process, as with ``-n 0``).
* Each file runs on one worker (``pytest_collection_modifyitems`` groups it): a notebook's cells share
  one kernel, and a test file's module fixtures (the docs build, the wheel, the exercise kernel) are
  made once.
* Everything on a worker computes with one thread: the notebooks set one in their settings cell, as
  every minirlhf command does; ``tests/conftest.py`` sets one per worker, and ``OMP_NUM_THREADS=1``
  holds for the kernels and subprocesses a worker starts. Two threads per worker would wait on each
  other and run about three times slower.
* The files that take longest start first (``SLOW_FIRST``); one of them starting last would leave
  the other workers idle at the end. The list orders, never selects: a stale entry costs time only.
"""

import os

import pytest

# The files that take longest, longest first (benchmarks/results/notebook_times.json and `--durations`).
# Any file not listed starts after them, in collection order.
SLOW_FIRST = [
    "notebooks/04_dpo.ipynb",
    "notebooks/03_ppo_with_kl.ipynb",
    "notebooks/06_beyond_ppo.ipynb",
    "tests/test_open_anywhere.py",
    "tests/test_docs.py",
    "notebooks/02_reward_model.ipynb",
    "notebooks/05_ppo_vs_dpo.ipynb",
    "tests/test_trl_multiprocess.py",
    "notebooks/01_sft_tiny_gpt.ipynb",
]

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER is not None and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the kernels and subprocesses this worker starts


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown to pytest without it
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: the CPUs this process may use (xdist's own count, psutil's physical cores, ignores
    CPU affinity). No worker at all on one CPU, nor for a single file (``python -m pytest
    tests/test_sft.py``, or tests in it): one file runs on one worker anyway, which would only add
    the workers' start-up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    files = {arg.split("::", 1)[0] for arg in config.args}
    if cpus < 2 or (len(files) == 1 and os.path.isfile(files.pop())):
        return 0
    return cpus


def _group(item) -> str:
    """The xdist group of ``item``: its file."""
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the marks
def pytest_collection_modifyitems(config, items):
    """Mark each item with its group (``xdist_group``); on xdist's workers, put the groups of
    ``SLOW_FIRST`` first (keeping each file's items together and in order). A serial run keeps
    pytest's order, and the marks do nothing there."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    if WORKER is None:
        return
    rank = {group: i for i, group in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))
