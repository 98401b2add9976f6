"""Shared test set-up: offline hub, deterministic small thread count, shared fixtures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two threads in a serial run; under pytest-xdist (``-n N``, see pyproject.toml) the N workers share the
# cores: one thread each, else 2N threads fight over the cores and every test crawls.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(2 if WORKERS <= 1 else 1)


@pytest.fixture(scope="session")
def base():
    """The shipped SFT base model and its tokenizer (read-only: copy before training it)."""
    from minirlhf.saved_models import load_base_model

    return load_base_model()


@pytest.fixture
def tiny():
    """A fresh random tiny GPT and its tokenizer (seed 0)."""
    from minirlhf.models import build_tiny_gpt

    model, tokenizer = build_tiny_gpt(seed=0)
    return model.eval(), tokenizer
