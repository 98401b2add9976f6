"""Input checks: a wrong seed, number or config field refused with a message that names it.

Every config of minirlhf runs :func:`check_config` when it is built, so that a mistake shows before
any training. The limits below (:data:`MAX_SEED`, :data:`BETA_RANGE`, :data:`MIN_LEARNING_RATE`)
say which values minirlhf computes with; :func:`shorten` keeps a quoted input short in a message.
"""

from __future__ import annotations

import dataclasses
import math


def shorten(value, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, with the full length said: error messages
    quote the user's text, and a megabyte of it would bury the message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:limit - 5]}...{text[-3:]}{size}"


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """Raise a ValueError that names ``name`` unless ``value`` is a finite number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return value


MAX_SEED = 2**32 - 1
"""The largest seed: numpy, which ``datasets`` shuffles with, takes seeds below 2**32."""


def check_seed(seed, name: str = "seed", maximum: int = MAX_SEED) -> int:
    """Raise a ValueError that names ``name`` unless ``seed`` is an integer from 0 to ``maximum``
    (:data:`MAX_SEED`: 2**32 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= maximum:
        raise ValueError(f"{name} must be an integer from 0 to {maximum:,}"
                         f"{' (2**32 - 1)' if maximum == MAX_SEED else ''}, got {shorten(seed)}. Any number "
                         "in that range gives a different run, e.g. 0, 1, 2.")
    return seed


BETA_RANGE = (1e-4, 1e4)
"""The KL coefficients minirlhf computes with (besides 0 where allowed): below 1e-4, pi* is already
the best answer alone; above 1e4 it is pi_ref itself; far outside, exp(r / beta) under- or overflows."""


MIN_LEARNING_RATE = 1e-9
"""The smallest learning rate: below it an Adam step moves no float32 weight of a model like this one."""


def check_config(config, positive=(), non_negative=(), unit_interval=()) -> None:
    """Refuse a wrong config field when the config is built, with a message that names it.

    Types come from the dataclass's annotations: a ``bool`` field takes only True or False (not
    "no"), an ``int`` field an integer (not 2.5, not "3"), a ``float`` field a finite number, and
    ``X | None`` also None. Then ranges: the fields named in ``positive`` must be > 0, in
    ``non_negative`` >= 0, in ``unit_interval`` within [0, 1]. Three names carry limits of their own
    in every config: ``seed`` (see :func:`check_seed`), ``beta`` (0, where allowed, or within
    :data:`BETA_RANGE`) and any ``*learning_rate`` (at least :data:`MIN_LEARNING_RATE`).
    """
    for field in dataclasses.fields(config):
        value, kind = getattr(config, field.name), str(field.type).replace(" ", "")
        if value is None and kind.endswith("|None"):
            continue
        kind = kind.split("|")[0]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {"bool": isinstance(value, bool), "int": number and isinstance(value, int),
              "float": number and math.isfinite(value), "str": isinstance(value, str)}.get(kind, True)
        if not ok:
            wanted = {"bool": "True or False", "int": "an integer", "float": "a finite number",
                      "str": "a string"}[kind]
            raise ValueError(f"{field.name} must be {wanted}, got {shorten(value)}.")
    kinds = {field.name: str(field.type) for field in dataclasses.fields(config)}
    for names, bound, fails in ((positive, "> 0", lambda v: v <= 0), (non_negative, ">= 0", lambda v: v < 0),
                                (unit_interval, "in [0, 1]", lambda v: not 0 <= v <= 1)):
        for name in names:
            value = getattr(config, name)
            if value is not None and fails(value):
                kind = "an integer" if kinds[name] == "int" else "a number"
                raise ValueError(f"{name} must be {kind} {bound}, got {value!r}.")
    if "seed" in kinds:
        check_seed(config.seed)
    beta = getattr(config, "beta", None)
    if "beta" in kinds and beta and not BETA_RANGE[0] <= beta <= BETA_RANGE[1]:
        raise ValueError(f"beta must be between {BETA_RANGE[0]:g} and {BETA_RANGE[1]:g}, got {beta!r}: "
                         "below, the optimum pi* is already the best answer alone and the numbers "
                         "underflow; above, pi* is the reference model itself. Try 0.1 (strong pull to the "
                         "reward) to 1.")
    for name in kinds:
        rate = getattr(config, name)
        if name.endswith("learning_rate") and rate is not None and 0 < rate < MIN_LEARNING_RATE:
            raise ValueError(f"{name} must be at least {MIN_LEARNING_RATE:g}, got {rate!r}: an optimiser "
                             "step that small changes no weight, so training would silently do nothing. Try "
                             "1e-4 to 3e-3 for this tiny model.")
