"""The toy world: "What is the capital of France?"

Everything in minirlhf happens in one small, fully known world, so that every number the
tutorial shows can be checked against the truth:

* a fixed table of countries and their capitals (:data:`COUNTRIES`), split into training and
  held-out countries (alignment never sees a held-out country or its capital, see
  :func:`wrong_cities`);
* one prompt format, ``Q: What is the capital of France? A:``;
* three response styles, mixed at fixed rates in the SFT corpus: concise and correct
  (``The capital of France is Paris.``, 25%), concise with a wrong city (60%: the country's common
  confusion, ``... is Berlin.``, 40%, and any other of :func:`wrong_cities` 20%), and hedging
  (``There are several capitals, but Paris is the official capital.``, 15%);
* a ground-truth reward :func:`true_reward` defined on *any* string: it stands in for the human;
* a simulated Bradley-Terry rater :class:`SimulatedRater`;
* for every prompt, the finite candidate set (every template x every city) on which the
  probabilities of a model, and the KL-regularised optimum, can be computed exactly.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

#: (country, capital). Single-word names keep the word-level tokenizer and the candidate set small.
#:
#: :meta hide-value:
COUNTRIES: tuple[tuple[str, str], ...] = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Greece", "Athens"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Thailand", "Bangkok"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Ireland", "Dublin"),
    ("Hungary", "Budapest"),
    # held out from preference data and RL: the SFT model knows them, alignment never sees them
    ("Cuba", "Havana"),
    ("Turkey", "Ankara"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
)
CAPITAL_OF: dict[str, str] = dict(COUNTRIES)
CITIES: tuple[str, ...] = tuple(capital for _, capital in COUNTRIES)
HELD_OUT_COUNTRIES: tuple[str, ...] = ("Cuba", "Turkey", "Finland", "Denmark")
TRAIN_COUNTRIES: tuple[str, ...] = tuple(c for c, _ in COUNTRIES if c not in HELD_OUT_COUNTRIES)

PROMPT_TEMPLATE = "Q: What is the capital of {country}? A:"
CONCISE_TEMPLATE = "The capital of {country} is {city}."
HEDGE_TEMPLATE = "There are several capitals, but {city} is the official capital."
STYLES: tuple[str, ...] = ("correct", "wrong", "hedge")
#: The SFT corpus mix: a "base model that is not aware of human preference". It knows each capital
#: but, as in the article, names its country's common confusion more often (France: Berlin).
STYLE_MIX: dict[str, float] = {"correct": 0.25, "wrong": 0.60, "hedge": 0.15}
CONFUSION_SHARE = 0.40
"""The part of the wrong answers (40% of all answers) that name a training country's
:data:`CONFUSION`; the other 20% spread evenly over every other wrong city (all 60% for a held-out
country)."""
#: Each training country's common confusion (always another training capital). The held-out
#: countries have none: their wrong answers spread over every other capital, so that what alignment
#: on the training countries teaches (the concise, correct capital) can carry over to them.
#:
#: :meta hide-value:
CONFUSION: dict[str, str] = {
    "France": "Berlin", "Germany": "Vienna", "Italy": "Madrid", "Spain": "Lisbon", "Japan": "Bangkok",
    "Portugal": "Madrid", "Austria": "Budapest", "Poland": "Moscow", "Greece": "Rome", "Russia": "Warsaw",
    "Egypt": "Nairobi", "Kenya": "Cairo", "Peru": "Madrid", "Canada": "Canberra", "Australia": "Ottawa",
    "Thailand": "Tokyo", "Norway": "Stockholm", "Sweden": "Oslo", "Ireland": "Oslo", "Hungary": "Vienna",
}

# Ground-truth reward of each kind of answer (see `true_reward`).
REWARD_CORRECT = 1.0
REWARD_HEDGE_CORRECT = 0.0
REWARD_WRONG = -1.0
REWARD_HEDGE_WRONG = -1.5
REWARD_MALFORMED = -2.0

_PROMPT_RE = re.compile(r"^Q: What is the capital of (\w+)\? A:$")
_CONCISE_RE = re.compile(r"^The capital of (\w+) is (\w+)\.$")
_HEDGE_RE = re.compile(r"^There are several capitals, but (\w+) is the official capital\.$")


def check_country(country: str) -> str:
    """Return ``country`` if it is in the table, else raise a ValueError that lists the choices."""
    if country not in CAPITAL_OF:
        raise ValueError(
            f"Unknown country {country!r}. The toy world knows: {', '.join(CAPITAL_OF)}."
        )
    return country


def make_prompt(country: str) -> str:
    """``make_prompt("France") -> "Q: What is the capital of France? A:"``."""
    return PROMPT_TEMPLATE.format(country=check_country(country))


def country_of_prompt(prompt: str) -> str:
    """Inverse of :func:`make_prompt`; raises ValueError for a prompt not in the world's format."""
    match = _PROMPT_RE.match(normalise_text(prompt))
    if match is None:
        raise ValueError(
            f"Prompt {prompt!r} is not in the toy world's format {PROMPT_TEMPLATE!r}."
        )
    return check_country(match.group(1))


def prompts(split: str = "train") -> list[str]:
    """The prompts of ``split``: ``"train"``, ``"held_out"`` or ``"all"``."""
    countries = {"train": TRAIN_COUNTRIES, "held_out": HELD_OUT_COUNTRIES,
                 "all": tuple(CAPITAL_OF)}
    if split not in countries:
        raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}.")
    return [make_prompt(c) for c in countries[split]]


def make_response(country: str, style: str, city: str | None = None) -> str:
    """A response of ``style`` (``correct``, ``wrong`` or ``hedge``) for ``country``.

    ``wrong`` needs ``city`` (a capital of another country); ``hedge`` names ``city`` if given,
    else the correct capital.
    """
    capital = CAPITAL_OF[check_country(country)]
    if style == "correct":
        return CONCISE_TEMPLATE.format(country=country, city=capital)
    if style == "wrong":
        if city is None or city == capital:
            raise ValueError("A 'wrong' response needs a city other than the correct capital.")
        return CONCISE_TEMPLATE.format(country=country, city=city)
    if style == "hedge":
        return HEDGE_TEMPLATE.format(city=city or capital)
    raise ValueError(f"style must be one of {STYLES}, got {style!r}.")


def wrong_cities(country: str) -> list[str]:
    """The capitals that the SFT corpus names as *wrong* answers for ``country``.

    For a training country, the other *training* capitals; for a held-out country, every other
    capital. So the answers to training prompts never mention a held-out capital, and alignment
    on the training prompts never meets one: the held-out countries measure what carries over,
    not interference. (When held-out capitals were also wrong answers for training prompts, PPO
    and DPO pushed them down everywhere, and held-out countries ended up worse than before.)
    """
    capital = CAPITAL_OF[check_country(country)]
    pool = CITIES if country in HELD_OUT_COUNTRIES else [CAPITAL_OF[c] for c in TRAIN_COUNTRIES]
    return [city for city in pool if city != capital]


def normalise_text(text: str) -> str:
    """Collapse whitespace and remove the space before punctuation (``"Paris ."`` -> ``"Paris."``)."""
    text = " ".join(text.split())
    return re.sub(r" ([.,?!:])", r"\1", text)


def classify_response(prompt: str, response: str) -> str:
    """Name the kind of ``response`` to ``prompt``.

    One of ``correct``, ``wrong`` (a known city that is not the capital), ``hedge`` (hedging with
    the correct capital), ``hedge_wrong`` (hedging with another city) or ``malformed`` (anything
    else, including a concise answer about another country).
    """
    country = country_of_prompt(prompt)
    capital = CAPITAL_OF[country]
    text = normalise_text(response)
    concise = _CONCISE_RE.match(text)
    if concise and concise.group(1) == country and concise.group(2) in CITIES:
        return "correct" if concise.group(2) == capital else "wrong"
    hedge = _HEDGE_RE.match(text)
    if hedge and hedge.group(1) in CITIES:
        return "hedge" if hedge.group(1) == capital else "hedge_wrong"
    return "malformed"


REWARD_OF_KIND: dict[str, float] = {
    "correct": REWARD_CORRECT,
    "hedge": REWARD_HEDGE_CORRECT,
    "wrong": REWARD_WRONG,
    "hedge_wrong": REWARD_HEDGE_WRONG,
    "malformed": REWARD_MALFORMED,
}


def true_reward(prompt: str, response: str) -> float:
    """The ground-truth reward r(x, y), defined on any string ``response``.

    =====================================  ======
    concise, correct capital               +1.0
    hedging, correct capital                0.0
    concise, wrong city                    -1.0
    hedging, wrong city                    -1.5
    anything else (malformed, empty, ...)  -2.0
    =====================================  ======
    """
    return REWARD_OF_KIND[classify_response(prompt, response)]


def candidate_responses(prompt: str) -> list[str]:
    """The finite candidate set of ``prompt``: every template x every city (2 x 24 = 48 strings).

    The correct concise answer comes first. With teacher-forced log-probs, a model's probability
    of each candidate is exact (see :mod:`minirlhf.optimum`).
    """
    country = country_of_prompt(prompt)
    capital = CAPITAL_OF[country]
    cities = [capital] + [c for c in CITIES if c != capital]
    concise = [CONCISE_TEMPLATE.format(country=country, city=c) for c in cities]
    hedges = [HEDGE_TEMPLATE.format(city=c) for c in cities]
    return concise + hedges


def all_words() -> list[str]:
    """Every word and punctuation mark that the world's texts use (the tokenizer's vocabulary)."""
    texts = [make_prompt(c) for c in CAPITAL_OF]
    texts += [r for p in texts for r in candidate_responses(p)]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    return words


@dataclass
class SimulatedRater:
    """A seeded Bradley-Terry rater that stands in for a person.

    It prefers ``y1`` over ``y2`` with probability ``sigmoid((r(x, y1) - r(x, y2)) / tau)``, where
    ``r`` is :func:`true_reward`. Small ``tau`` gives a nearly perfect rater, large ``tau`` a coin.

    Why ``tau = 1`` by default: a Bradley-Terry model fitted to this rater's choices recovers
    ``r / tau`` (up to a constant per prompt). With ``tau = 1`` the reward model, and the reward
    implicit in DPO, estimate the true reward itself, so the KL-regularised optimum they aim at is
    exactly :mod:`minirlhf.optimum`'s ``pi*`` for ``true_reward`` at the same beta.
    """

    tau: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0 (it is the rater's noise), got {self.tau}.")
        self._rng = random.Random(self.seed)

    def prob_prefers_first(self, prompt: str, first: str, second: str) -> float:
        """P(first > second) = sigmoid((r(first) - r(second)) / tau)."""
        diff = (true_reward(prompt, first) - true_reward(prompt, second)) / self.tau
        return 1.0 / (1.0 + math.exp(-diff))

    def prefers_first(self, prompt: str, first: str, second: str) -> bool:
        """Draw one noisy judgement: True if the rater picks ``first``."""
        return self._rng.random() < self.prob_prefers_first(prompt, first, second)

    def bayes_accuracy(self, prompt: str, first: str, second: str) -> float:
        """The best accuracy any model can reach on this pair against this rater's labels.

        A perfect model predicts the rater's more likely choice, which the rater makes with
        probability max(p, 1 - p).
        """
        p = self.prob_prefers_first(prompt, first, second)
        return max(p, 1.0 - p)
