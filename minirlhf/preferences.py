"""Preference data: triplets (prompt, chosen, rejected) collected from the SFT model.

As in the article: for each prompt, sample two responses from the SFT model, let a rater pick
the winner, and store the triplet ``(x, y_w, y_l)``. Data are ``datasets.Dataset`` objects with
string columns ``prompt``, ``chosen``, ``rejected`` (TRL's "standard" preference format), plus,
for teaching, the true rewards ``chosen_reward`` and ``rejected_reward``.

Three ways to get such data:

* :func:`collect_preferences` with the seeded :class:`~minirlhf.world.SimulatedRater`;
* a person, with the labeling panel of :mod:`minirlhf.widgets` (it uses
  :func:`sample_response_pairs` and :func:`label_pairs` below);
* any other data set or local file, checked and normalised by :func:`load_preferences`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from minirlhf import world
from minirlhf.checks import shorten
from minirlhf.logprobs import encode_texts
from minirlhf.sampling import generate
from minirlhf.saved_models import load_base_model
from minirlhf.training import seed_everything

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


class PreferenceDataError(ValueError, TypeError):
    """Preference data that :func:`load_preferences` cannot use (a ValueError, and a TypeError
    when a value has the wrong type)."""


def sample_response_pairs(model, tokenizer, prompts: list[str], pairs_per_prompt: int = 16,
                          seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 16,
                          max_tries: int = 20, progress: bool = True) -> list[tuple[str, str, str]]:
    """Sample ``pairs_per_prompt`` pairs of *different* responses per prompt from ``model``.

    Identical pairs carry no preference, so they are dropped and drawn again (at most
    ``max_tries`` rounds). All prompts are sampled together in one batch per round, which is
    much faster than one prompt at a time. Returns ``(prompt, first, second)`` triples grouped
    by prompt, in the order of ``prompts``; ``first`` and ``second`` are two independent samples
    (so which one is shown on the left is random).
    """
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be >= 1, got {pairs_per_prompt}.")
    if not prompts:
        raise ValueError("No prompts given: pass e.g. minirlhf.world.prompts('train').")
    generator = seed_everything(seed)
    pairs: dict[str, list[tuple[str, str, str]]] = {p: [] for p in prompts}
    wanted = {p: pairs_per_prompt * list(prompts).count(p) for p in pairs}
    bar = tqdm(total=sum(wanted.values()), desc="Sampling pairs", disable=not progress)
    for _ in range(max_tries):
        missing = {p: wanted[p] - len(pairs[p]) for p in pairs if len(pairs[p]) < wanted[p]}
        if not missing:
            break
        # Ask for 1.5 times what is missing: about 40% of the SFT model's pairs repeat one answer.
        batch = [p for p, n in missing.items() for _ in range(math.ceil(1.5 * n))]
        responses = generate(model, tokenizer, batch + batch, max_new_tokens, temperature,
                             generator)["responses"]
        first, second = responses[:len(batch)], responses[len(batch):]
        for prompt, y1, y2 in zip(batch, first, second):
            if y1 != y2 and len(pairs[prompt]) < wanted[prompt]:
                pairs[prompt].append((prompt, y1, y2))
                bar.update(1)
    bar.close()
    return [triple for p in pairs for triple in pairs[p]]


def _true_reward_or_nan(prompt: str, response: str) -> float:
    """The toy world's true reward, or NaN for a prompt that is not from the toy world."""
    try:
        return world.true_reward(prompt, response)
    except ValueError:
        return float("nan")


def preference_row(prompt: str, chosen: str, rejected: str) -> dict:
    """One row of preference data, with the true rewards as extra columns for teaching."""
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
            "chosen_reward": _true_reward_or_nan(prompt, chosen),
            "rejected_reward": _true_reward_or_nan(prompt, rejected)}


def label_pairs(pairs: list[tuple[str, str, str]], rater: world.SimulatedRater) -> Dataset:
    """Let ``rater`` pick the winner of each ``(prompt, first, second)``; return the Dataset."""
    rows = []
    for prompt, y1, y2 in pairs:
        chosen, rejected = (y1, y2) if rater.prefers_first(prompt, y1, y2) else (y2, y1)
        rows.append(preference_row(prompt, chosen, rejected))
    return Dataset.from_list(rows)


def collect_preferences(model, tokenizer, prompts: list[str], pairs_per_prompt: int = 16,
                        rater: world.SimulatedRater | None = None, seed: int = 0,
                        temperature: float = 1.0, max_new_tokens: int = 16,
                        max_tries: int = 20, progress: bool = True) -> Dataset:
    """Sample response pairs from ``model`` and let ``rater`` label them.

    For each prompt we draw ``pairs_per_prompt`` pairs with two *different* responses (see
    :func:`sample_response_pairs`). The rater (default: :class:`~minirlhf.world.SimulatedRater`
    with ``seed``) picks the winner. Returns a Dataset with columns ``prompt``, ``chosen``,
    ``rejected``, ``chosen_reward``, ``rejected_reward``.
    """
    rater = rater or world.SimulatedRater(seed=seed)
    pairs = sample_response_pairs(model, tokenizer, prompts, pairs_per_prompt, seed, temperature,
                                  max_new_tokens, max_tries, progress)
    return label_pairs(pairs, rater)


def on_policy_pairs(policy, tokenizer, prompts: list[str], pairs_per_prompt: int, rater, seed: int,
                    temperature: float = 1.0, against=None):
    """Fresh preference pairs sampled from the *current* policy, labelled by ``rater``.

    This is where on-policy DPO, and PPO's reward-model refreshes, get their data: the answers the
    policy gives now, including the malformed ones it starts to drift towards, are judged, so
    that they can be pushed down (DPO) or scored right (the reward model). Each prompt gets
    ``pairs_per_prompt`` pairs of two independent samples; pairs of identical answers carry no
    preference and are dropped (so a sharper policy yields fewer pairs). Returns a Dataset with
    ``prompt``, ``chosen``, ``rejected``.
    """
    policy.eval()
    generator = seed_everything(seed)
    batch = [p for p in prompts for _ in range(pairs_per_prompt)]
    first = generate(policy, tokenizer, batch, temperature=temperature, generator=generator)["responses"]
    second = generate(against if against is not None else policy, tokenizer, batch, temperature=temperature,
                      generator=generator)["responses"]
    rows = []
    for prompt, y1, y2 in zip(batch, first, second):
        if y1 != y2:
            chosen, rejected = (y1, y2) if rater.prefers_first(prompt, y1, y2) else (y2, y1)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return Dataset.from_list(rows)


@functools.lru_cache(maxsize=8)
def _default_preferences_of_base_model(pairs_per_prompt: int, seed: int,
                                       test_fraction: float) -> DatasetDict:
    """Cached: every stage (reward model, DPO, PPO) starts from the same data in one session."""
    model, tokenizer = load_base_model()
    data = collect_preferences(model, tokenizer, world.prompts("train"), pairs_per_prompt,
                               seed=seed, progress=False)
    return data.train_test_split(test_size=test_fraction, seed=seed)


PAIRS_PER_PROMPT = 128
"""Pairs per training prompt of the tutorial's preference data (2,560 rater labels in all, of which
80% train): enough for the reward model to learn which city goes with which country."""


def default_preferences(model=None, tokenizer=None, pairs_per_prompt: int = PAIRS_PER_PROMPT, seed: int = 0,
                        test_fraction: float = 0.2, progress: bool = True) -> DatasetDict:
    """The tutorial's preference data: pairs from the (shipped) SFT model on the training prompts,
    labelled by the simulated rater, split into ``train`` and ``test``.

    Split by pair, seeded; held-out *countries* never appear here (they measure generalisation).
    With the shipped model (``model=None``) the data are cached for the session: datasets are
    immutable, so sharing them is safe. The reward model and offline DPO learn from the same pairs.
    """
    if model is None:  # a new DatasetDict each call, so that assigning a split leaves the cache alone
        return DatasetDict(_default_preferences_of_base_model(pairs_per_prompt, seed, test_fraction))
    data = collect_preferences(model, tokenizer, world.prompts("train"), pairs_per_prompt,
                               seed=seed, progress=progress)
    return data.train_test_split(test_size=test_fraction, seed=seed)


def distinct_answers(data: Dataset) -> tuple[list[tuple[str, str]], list[int], list[int]]:
    """The distinct ``(prompt, response)`` of ``data``, and the index in them of each pair's chosen and
    rejected answer (the reward model scores each distinct answer once)."""
    prompts = list(data["prompt"])
    chosen, rejected = list(zip(prompts, data["chosen"])), list(zip(prompts, data["rejected"]))
    row_of = {key: i for i, key in enumerate(dict.fromkeys(chosen + rejected))}
    return list(row_of), [row_of[k] for k in chosen], [row_of[k] for k in rejected]


def bayes_optimal_accuracy(data: Dataset, rater: world.SimulatedRater | None = None) -> float:
    """The best pair accuracy any model can reach on ``data`` against the rater's noisy labels.

    Mean over pairs of max(p, 1 - p), p = the rater's probability of preferring the first answer.
    """
    rater = rater or world.SimulatedRater()
    accuracies = [rater.bayes_accuracy(p, c, r)
                  for p, c, r in zip(data["prompt"], data["chosen"], data["rejected"])]
    return float(torch.tensor(accuracies).mean())


# ---------------------------------------------------------------------------------------------
# Loading other preference data
# ---------------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    """The text of ``path`` as UTF-8 (a byte-order mark, as spreadsheets write, is dropped), or an
    error that names the file and what to do."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise PreferenceDataError(f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at "
                                  f"position {error.start}): save it again as UTF-8 (in a spreadsheet: "
                                  "'CSV UTF-8'), or re-encode it, e.g. iconv -f latin1 -t utf-8.") from error


def _read_json(text: str, path: Path, line: int | None = None):
    """``json.loads(text)``, or an error that names the file and the line (``line`` of a .jsonl file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PreferenceDataError(f"{path}, line {line or error.lineno}: not valid JSON ({error.msg}, column "
                                  f"{error.colno}). Fix that line, or delete it.") from error
    except RecursionError as error:
        where = f", line {line}" if line else ""
        raise PreferenceDataError(f"{path}{where}: the JSON is nested too deep to read (lists or objects "
                                  "inside each other thousands of times). Preference data are flat: one "
                                  "object per row with the strings prompt, chosen, rejected.") from error


def _columns_to_rows(content: dict, path: Path) -> list[dict]:
    """A JSON object of columns (``{"prompt": [...], "chosen": [...], ...}``) as rows, refused unless
    every column is a list and all have the same length."""
    lengths = {name: len(values) if isinstance(values, list) else None for name, values in content.items()}
    not_lists = [name for name, n in lengths.items() if n is None]
    if not_lists:
        raise PreferenceDataError(f"{path}: an object of columns needs a list for each column, but "
                                  f"{shorten(not_lists[0])} is a {type(content[not_lists[0]]).__name__}. "
                                  "Give a list of row objects, or one list per column.")
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{name[:40]}: {n}" for name, n in list(lengths.items())[:6])
        raise PreferenceDataError(f"{path}: the columns have different lengths ({counts}); every row needs "
                                  "a prompt, a chosen and a rejected answer. Make the lists equally long.")
    names = list(content)
    return [dict(zip(names, values)) for values in zip(*content.values())]


def _read_csv(text: str, path: Path) -> list[dict]:
    """The rows of a CSV file, refused (naming the line) where a row has more or fewer fields than the
    header: a comma inside an unquoted text splits it in two."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for row in reader:
            header = len(reader.fieldnames)
            if None in row:  # DictReader puts the fields beyond the header under the key None
                raise PreferenceDataError(
                    f"{path}, line {reader.line_num}: {header + len(row[None])} fields where the header "
                    f"has {header}. A text with a comma must be in double quotes (\"like, this\"); a "
                    "spreadsheet's 'Save as CSV' does that.")
            if any(value is None for value in row.values()):
                found = sum(value is not None for value in row.values())
                raise PreferenceDataError(
                    f"{path}, line {reader.line_num}: {found} fields where the header has {header}. Fill in "
                    "the missing ones, or delete the row.")
            rows.append(row)
    except csv.Error as error:
        raise PreferenceDataError(f"{path}, line {reader.line_num}: not valid CSV ({error}). Fix that line, "
                                  "or save the file again from a spreadsheet as 'CSV UTF-8'.") from error
    return rows


def _read_records(path: Path) -> list[dict]:
    """Rows of a local .json (a list of objects, or an object of columns), .jsonl or .csv file."""
    if not path.is_file():
        raise FileNotFoundError(f"No preference file at {str(path)!r}.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        lines = enumerate(_read_text(path).splitlines(), start=1)
        return [_read_json(text, path, n) for n, text in lines if text.strip()]
    if suffix == ".json":
        content = _read_json(_read_text(path), path)
        if isinstance(content, dict):  # {"prompt": [...], "chosen": [...], ...}
            return _columns_to_rows(content, path)
        if isinstance(content, list):
            return content
        raise ValueError(f"{path} must hold a list of objects or an object of columns.")
    if suffix == ".csv":
        return _read_csv(_read_text(path), path)
    raise ValueError(f"Cannot read {shorten(path.name)}: use a .json, .jsonl or .csv file, or a Dataset.")


def check_preference_row(i: int, row: dict, allow_empty_answers: bool = False) -> None:
    """Raise a :class:`PreferenceDataError` naming row ``i`` unless its ``prompt``, ``chosen`` and
    ``rejected`` are non-empty strings and ``chosen`` differs from ``rejected`` by more than spacing
    (compared after :func:`minirlhf.world.normalise_text`: ``"Paris ."`` is ``"Paris."``). With
    ``allow_empty_answers``, an empty answer passes: a model that samples its EOS first says nothing,
    and a rater can judge that (pairs sampled from the SFT model can hold one; the reward model and
    DPO learn from them)."""
    for column in PREFERENCE_COLUMNS:
        value = row.get(column)
        if not isinstance(value, str):
            hint = (" Conversational data (lists of messages) must be flattened to text first."
                    if isinstance(value, (list, dict)) else "")
            raise PreferenceDataError(f"Row {i}: {column!r} must be a string, got {type(value).__name__} "
                                      f"{shorten(value)}.{hint}")
        if not value.strip() and (column == "prompt" or not allow_empty_answers):
            raise PreferenceDataError(f"Row {i}: {column!r} is empty. Drop the row or fill it in.")
    if world.normalise_text(row["chosen"]) == world.normalise_text(row["rejected"]):
        raise PreferenceDataError(f"Row {i}: 'chosen' ({shorten(row['chosen'])}) and 'rejected' "
                                  f"({shorten(row['rejected'])}) are the same text up to spacing: identical "
                                  "pairs say nothing about preference. Drop them.")


def check_preference_data(data, what: str = "preference data", tokenizer=None,
                          allow_empty_answers: bool = False) -> None:
    """THE check of preference data, used by :func:`load_preferences`, the reward model and DPO.

    ``data`` must be a ``datasets.Dataset`` with string columns ``prompt``, ``chosen`` and
    ``rejected`` (TRL's standard format), at least one row, and in every row non-empty texts with
    ``chosen != rejected``; with a ``tokenizer`` (training), also as tokens: a pair read as the same
    tokens would train at zero margin. Raises a :class:`PreferenceDataError` that says what to fix.
    """
    columns = getattr(data, "column_names", None)
    if columns is None:
        raise PreferenceDataError(f"The {what} must be a datasets.Dataset with columns 'prompt', 'chosen', "
                                  f"'rejected'; got a {type(data).__name__}. Build one with "
                                  "Dataset.from_list(rows), or use load_preferences(...).")
    missing = [c for c in PREFERENCE_COLUMNS if c not in columns]
    if missing:
        raise PreferenceDataError(f"The {what} lack the column(s) {missing}: they need prompt, chosen, "
                                  f"rejected and have {shorten(columns, 200)}. Rename yours with "
                                  "load_preferences(data, columns={'your_name': 'chosen', ...}).")
    if len(data) == 0:
        raise PreferenceDataError(f"The {what} are empty: give at least one (prompt, chosen, rejected).")
    for i, texts in enumerate(zip(*(data[c] for c in PREFERENCE_COLUMNS))):
        check_preference_row(i, dict(zip(PREFERENCE_COLUMNS, texts)), allow_empty_answers)
    if tokenizer is not None:
        chosen, rejected = (encode_texts(tokenizer, data[c], "response") for c in ("chosen", "rejected"))
        for i, (c, r) in enumerate(zip(chosen, rejected)):
            if c == r:
                raise PreferenceDataError(f"Row {i} of the {what}: 'chosen' ({shorten(data[i]['chosen'])}) "
                                          f"and 'rejected' ({shorten(data[i]['rejected'])}) are the same "
                                          "tokens: identical pairs say nothing about preference. Drop them.")


def load_preferences(source, columns: dict[str, str] | None = None) -> Dataset:
    """Check and normalise preference data into the standard format.

    ``source`` is a ``datasets.Dataset``, a list of dicts, or the path of a local ``.json``,
    ``.jsonl`` or ``.csv`` file. ``columns`` renames the source's columns, e.g.
    ``{"question": "prompt", "good": "chosen", "bad": "rejected"}``.

    Returns a Dataset whose first columns are the strings ``prompt``, ``chosen``, ``rejected``
    (surrounding whitespace stripped), followed by any extra columns of the source. Raises a
    ValueError naming the first problem: a missing column, a value that is not a string, an
    empty text, or a pair whose chosen and rejected answers are identical.
    """
    if isinstance(source, (DatasetDict, dict)):
        raise PreferenceDataError("Pass one split (e.g. data['train']), not a DatasetDict.")
    if isinstance(source, Dataset):
        records = source.to_list()
        names = list(source.column_names)
    elif isinstance(source, (str, Path)):
        records = _read_records(Path(source))
        names = list(records[0]) if records else []
    elif isinstance(source, list):
        records, names = source, list(source[0]) if source else []
    else:
        raise PreferenceDataError(f"Cannot load preferences from a {type(source).__name__}: pass a "
                         "datasets.Dataset, a list of dicts or a .json/.jsonl/.csv path.")
    if not records:
        raise ValueError("The preference data are empty: give at least one (prompt, chosen, "
                         "rejected) row.")
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise PreferenceDataError(f"Row {i} is a {type(row).__name__}, not an object with prompt, chosen "
                                      "and rejected: give one object (dict) per row.")
    columns = columns or {}
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValueError(f"columns= renames {shorten(unknown, 200)}, which the data do not have; they have "
                         f"{shorten(names, 200)}.")
    targets = list(columns.values()) + [n for n in names if n not in columns]
    clashes = sorted({n for n in targets if targets.count(n) > 1})
    if clashes:
        old = clashes[0]
        raise PreferenceDataError(f"columns= would make two columns named {shorten(clashes, 200)} (a rename "
                                  "onto a column the data have, or two renames onto one name): one would be "
                                  "lost. Rename the existing one too, e.g. "
                                  f"columns={{{shorten(old)}: {shorten(old + '_old')}, ...}}, "
                                  "or drop it first.")
    records = [{columns.get(k, k): v for k, v in row.items()} for row in records]
    names = [columns.get(n, n) for n in names]
    missing = [c for c in PREFERENCE_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"The preference data lack the column(s) {missing}; they have "
                         f"{shorten(names, 200)}. "
                         "Rename yours with columns={'your_name': 'chosen', ...}.")
    extras = [n for n in names if n not in PREFERENCE_COLUMNS]
    rows = []
    for i, row in enumerate(records):
        for column in PREFERENCE_COLUMNS:
            if column not in row:
                raise ValueError(f"Row {i} has no {column!r}: every row needs prompt, chosen, rejected.")
        check_preference_row(i, row)
        clean = {c: row[c].strip() for c in PREFERENCE_COLUMNS}
        clean.update({n: row.get(n) for n in extras})
        rows.append(clean)
    return Dataset.from_list(rows)
