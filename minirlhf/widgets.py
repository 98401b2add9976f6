"""ipywidgets explorers for the notebooks.

Each widget keeps its logic in plain Python (testable without a browser) and only draws with
ipywidgets. In a live notebook (JupyterLab, Jupyter Notebook, Colab) it shows the interactive
panel; anywhere else (plain Python, headless execution by nbconvert or nbval, the stored notebook,
the docs) it shows a static picture of its first state and one line saying how to get the panel,
and creates no widget at all, so that no widget state is stored.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import random
import stat
import sys
import tempfile
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
from datasets import Dataset
from IPython import get_ipython
from IPython.display import display

from minirlhf import world
from minirlhf.checks import shorten
from minirlhf.files import disk_full, is_disk_full, read_json_file
from minirlhf.optimum import optimal_policy, with_outside
from minirlhf.plots import plot_distributions
from minirlhf.preferences import label_pairs, preference_row, sample_response_pairs

LIVE_ENV = "MINIRLHF_WIDGETS"
"""Set to 1 to force interactive widgets (e.g. in an editor this module does not recognise), 0 to
force the static picture."""


def live_frontend() -> bool:
    """True in a kernel that a person is looking at: started by a Jupyter server (JupyterLab,
    Jupyter Notebook, which set ``JPY_SESSION_NAME``) or on Colab. False in plain Python and in
    headless execution (nbconvert, nbval, the docs build). ``MINIRLHF_WIDGETS=1`` / ``0`` overrides."""
    forced = os.environ.get(LIVE_ENV)
    if forced is not None:
        return forced.strip() not in ("", "0", "false", "False")
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return "JPY_SESSION_NAME" in os.environ or "google.colab" in sys.modules


def show_note(text: str) -> None:
    """Display one line of italic text (HTML, with a plain-text fallback)."""
    display({"text/plain": text, "text/html": f"<p><em>{html.escape(text)}</em></p>"}, raw=True)


BETA_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""The beta explorer's slider positions: 1-2-5 steps on a log scale, from a pi* that is nearly all
on the best answer (0.01) to one that is the reference (100)."""


class BetaExplorer:
    """pi_ref and pi* for one prompt, with a slider over beta (see :func:`beta_explorer`)."""

    def __init__(self, evaluator, prompt_index: int = 0, betas=BETA_STEPS, value: float = 0.5):
        self.ref = with_outside(evaluator.ref_set_probs[prompt_index])
        self.rewards = evaluator.rewards[prompt_index]
        self.candidates = evaluator.candidates[prompt_index]
        self.prompt = evaluator.prompts[prompt_index]
        betas = sorted(float(b) for b in betas)
        if len(betas) == 2:  # a range: the 1-2-5 steps within it
            betas = [b for b in BETA_STEPS if betas[0] <= b <= betas[1]] or betas
        if value not in betas:
            raise ValueError(f"value must be one of the slider's betas {betas}, got {value}.")
        self.betas, self.value = tuple(betas), value

    def figure(self, beta: float):
        """Bars of pi_ref and pi* at one ``beta`` over the reference's likeliest answers (the same
        answers, in the same order, and the same y-axis from 0 to 1 at every beta)."""
        star = optimal_policy(self.ref, self.rewards, beta)
        return plot_distributions({"pi_ref": self.ref, "pi*": star}, self.candidates,
                                  title=f"{self.prompt}  beta = {beta:g}", ylim=(0.0, 1.0))

    def widget(self) -> widgets.VBox:
        """The interactive panel: a slider over beta (log scale, 1-2-5 steps) above the figure."""
        slider = widgets.SelectionSlider(options=[(f"{b:g}", b) for b in self.betas], value=self.value,
                                         description="beta", continuous_update=False)
        output = widgets.Output()

        def redraw(_=None):
            with output:
                output.clear_output(wait=True)
                fig = self.figure(slider.value)
                display(fig)
                plt.close(fig)

        slider.observe(redraw, names="value")
        redraw()
        return widgets.VBox([slider, output])

    def _ipython_display_(self):
        if live_frontend():
            display(self.widget())
            return
        fig = self.figure(self.value)
        display(fig)
        plt.close(fig)
        show_note(f"A static picture at beta = {self.value}: run this cell in Jupyter for the "
                  "interactive slider.")


def beta_explorer(evaluator, prompt_index: int = 0, betas=BETA_STEPS,
                  value: float = 0.5) -> BetaExplorer:
    """A slider over beta that redraws pi_ref and pi* for one prompt of ``evaluator``.

    ``evaluator`` is a :class:`minirlhf.optimum.ExactEvaluator`. Small beta: pi* piles onto the
    best answer; large beta: pi* stays with the reference. ``betas``: the slider's positions (the
    default :data:`BETA_STEPS`, 0.01 to 100), or ``(low, high)`` for the steps between;
    ``value`` is one of them. Display the result (last line of a cell): in a live notebook it is
    the slider, elsewhere the figure at ``value``.
    """
    return BetaExplorer(evaluator, prompt_index, betas, value)


# --- labeling panel: be the human rater -----------------------------------------------------------

LABELS_FORMAT = "minirlhf-labels"
"""The ``format`` entry of a labeling session's save file (see :class:`LabelingSession`)."""


def _read_labels_file(path: Path) -> dict:
    """The content of a labeling session's save file, refused (never to be overwritten) when ``path``
    is a link, a folder, or a file that is not one."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise FileExistsError(f"{str(path)!r} is a link or a folder, not a file of labels: choose another "
                              "file name (e.g. 'my_labels.json').")
    fix = "It stays as it is: choose another file name for your labels (e.g. 'my_labels.json')."
    try:
        content = read_json_file(path, max_bytes=50_000_000, fix=fix)
    except ValueError as error:
        raise FileExistsError(f"{path} is not a file of labels that minirlhf saved. {fix}") from error
    if not (isinstance(content, dict) and content.get("format") == LABELS_FORMAT):
        raise FileExistsError(f"{path} is not a file of labels that minirlhf saved. {fix}")
    pairs, choices = content.get("pairs"), content.get("choices")
    if not (isinstance(pairs, list) and isinstance(choices, list) and len(choices) <= len(pairs)
            and all(c in LabelingSession.CHOICES for c in choices)):
        raise ValueError(f"{path} is damaged (its pairs or choices do not fit together): continue from a "
                         "copy, or choose another file name to start again.")
    return content


class LabelingSession:
    """The labeling panel's logic, free of widgets: a queue of answer pairs and your choices.

    Each item is ``(prompt, left, right)``. :meth:`choose` takes ``"left"``, ``"right"`` or
    ``"skip"`` and moves to the next pair; :meth:`undo` goes back one. :meth:`to_dataset` turns
    your choices into preference data (``prompt``, ``chosen``, ``rejected``, plus the true
    rewards), the same format as :func:`minirlhf.preferences.collect_preferences`.

    ``save_to``: a file name (e.g. ``"my_labels.json"``). The session is written there after every
    choice and undo (not before the first), so that a kernel restart loses nothing: if the file
    holds an earlier session of the same pairs, its choices are taken up again (:meth:`load` takes
    up any saved session). A file that is not a saved session is never overwritten.
    """

    CHOICES = ("left", "right", "skip")

    def __init__(self, pairs: list[tuple[str, str, str]], save_to: str | Path | None = None):
        pairs = [tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs]
        if not pairs:
            raise ValueError("No pairs to label: give at least one (prompt, left, right).")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, tuple) or len(pair) != 3 or not all(isinstance(t, str) for t in pair):
                raise ValueError(f"Pair {i} must be three strings (prompt, left, right), "
                                 f"got {shorten(pair)}.")
            if pair[1] == pair[2]:
                raise ValueError(f"Pair {i} shows the same answer twice ({shorten(pair[1])}); "
                                 "nothing to choose.")
        self.pairs = pairs
        self.choices: list[str] = []  # one per pair labelled so far, in order
        self.save_to = None if save_to is None else Path(save_to)
        if self.save_to is not None:
            if not self.save_to.parent.is_dir():
                raise FileNotFoundError(f"Cannot save labels as {str(self.save_to)!r}: the folder "
                                        f"{str(self.save_to.parent)!r} does not exist. Create it, or give a "
                                        "file name in the current folder (e.g. 'my_labels.json').")
            if os.path.lexists(self.save_to):
                saved = _read_labels_file(self.save_to)
                if [tuple(p) for p in saved["pairs"]] != self.pairs:
                    raise FileExistsError(
                        f"{self.save_to} holds labels of other pairs (another model, seed or number of "
                        "pairs). Take them up with LabelingSession.load(path) (or "
                        "labeling_panel(..., save_to=path) alone), or choose another file name.")
                self.choices = list(saved["choices"])
            elif not os.access(self.save_to.parent, os.W_OK | os.X_OK):
                raise PermissionError(f"Cannot save labels in {str(self.save_to.parent)!r}: it is not "
                                      "writable. Give a file name in a folder you may write to.")

    @classmethod
    def load(cls, path: str | Path) -> LabelingSession:
        """The session saved in ``path`` (pairs and choices so far); it goes on saving there."""
        path = Path(path)
        if not os.path.lexists(path):
            raise FileNotFoundError(f"No saved labels at {str(path)!r}: start a session with "
                                    f"labeling_panel(model, tokenizer, save_to={str(path)!r}).")
        saved = _read_labels_file(path)
        return cls([tuple(p) if isinstance(p, list) else p for p in saved["pairs"]], save_to=path)

    def save(self) -> None:
        """Write the session to ``save_to`` (if set): whole, into a new file renamed over the old one,
        so that a crash leaves the previous save. Never writes through a link."""
        if self.save_to is None:
            return
        content = {"format": LABELS_FORMAT, "version": 1, "labelled": self.n_labeled,
                   "skipped": self.n_skipped, "pairs": [list(p) for p in self.pairs], "choices": self.choices}
        folder = self.save_to.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.save_to.name}.tmp-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(content, file, indent=1)
            os.chmod(tmp, 0o644)
            if os.path.lexists(self.save_to) and not stat.S_ISREG(os.lstat(self.save_to).st_mode):
                raise FileExistsError(f"{self.save_to} became a link or a folder: labels not saved there.")
            os.replace(tmp, self.save_to)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if is_disk_full(error):
                raise disk_full(error, self.save_to) from error
            raise

    @classmethod
    def from_model(cls, model, tokenizer, prompts: list[str] | None = None, n_pairs: int = 20,
                   seed: int = 0, save_to: str | Path | None = None) -> LabelingSession:
        """``n_pairs`` pairs of different answers sampled from ``model`` (the SFT model), spread
        over ``prompts`` (default: the training prompts), in a seeded random order. ``save_to``:
        see the class."""
        prompts = prompts or world.prompts("train")
        per_prompt = -(-n_pairs // len(prompts))  # ceil
        pairs = sample_response_pairs(model, tokenizer, prompts, per_prompt, seed=seed, progress=False)
        random.Random(seed).shuffle(pairs)
        return cls(pairs[:n_pairs], save_to=save_to)

    @property
    def position(self) -> int:
        """Index of the pair shown now (== number of choices made)."""
        return len(self.choices)

    @property
    def done(self) -> bool:
        return self.position == len(self.pairs)

    @property
    def current(self) -> tuple[str, str, str] | None:
        """The pair to label now, ``(prompt, left, right)``, or None when all are done."""
        return None if self.done else self.pairs[self.position]

    @property
    def n_labeled(self) -> int:
        return sum(c != "skip" for c in self.choices)

    @property
    def n_skipped(self) -> int:
        return self.choices.count("skip")

    @property
    def n_remaining(self) -> int:
        return len(self.pairs) - self.position

    def choose(self, choice: str) -> None:
        """Record ``"left"``, ``"right"`` (the better answer) or ``"skip"`` for the current pair."""
        if choice not in self.CHOICES:
            raise ValueError(f"choice must be one of {self.CHOICES}, got {choice!r}.")
        if self.done:
            raise ValueError("Every pair is already labelled: call to_dataset(), or undo() to change one.")
        self.choices.append(choice)
        try:
            self.save()
        except BaseException:
            self.choices.pop()  # not saved: not made
            raise

    def undo(self) -> None:
        """Forget the last choice and show that pair again."""
        if not self.choices:
            raise ValueError("Nothing to undo: no pair has been labelled yet.")
        last = self.choices.pop()
        try:
            self.save()
        except BaseException:
            self.choices.append(last)
            raise

    def status(self) -> str:
        """A one-line running count, e.g. ``"3 labelled, 1 skipped, 16 to go"`` (and where it is saved)."""
        text = f"{self.n_labeled} labelled, {self.n_skipped} skipped, {self.n_remaining} to go"
        return text + (f"; saved in {self.save_to}" if self.save_to is not None else "")

    def to_dataset(self):
        """Your choices as preference data (skipped pairs left out); an empty Dataset with the
        right columns if you labelled nothing."""
        rows = []
        for (prompt, left, right), choice in zip(self.pairs, self.choices):
            if choice != "skip":
                chosen, rejected = (left, right) if choice == "left" else (right, left)
                rows.append(preference_row(prompt, chosen, rejected))
        if not rows:
            return Dataset.from_dict({"prompt": [], "chosen": [], "rejected": [],
                                      "chosen_reward": [], "rejected_reward": []})
        return Dataset.from_list(rows)

    def agreement_counts(self) -> dict[str, int]:
        """How your labels compare with the true reward, as counts: ``labelled`` pairs,
        ``skipped`` pairs, ``compared`` (the labelled pairs whose two answers differ in true
        reward), ``agreed`` (of those, the ones where you picked the higher), and ``ties`` (two
        answers of equal true reward, e.g. two wrong cities: no right choice, so left out)."""
        data = self.to_dataset()
        rewards = list(zip(data["chosen_reward"], data["rejected_reward"]))
        compared = [(c, r) for c, r in rewards if c == c and r == r and c != r]  # c == c: not NaN
        return {"labelled": len(rewards), "skipped": self.n_skipped, "compared": len(compared),
                "agreed": sum(c > r for c, r in compared), "ties": len(rewards) - len(compared)}

    def agreement_with_true_reward(self) -> float | None:
        """Fraction of your choices that picked the answer with the higher true reward (pairs of
        equal true reward left out, see :meth:`agreement_counts`); None if there is none yet."""
        counts = self.agreement_counts()
        return counts["agreed"] / counts["compared"] if counts["compared"] else None

    def summary(self) -> str:
        """What your labels say, in words and counts (what :meth:`agreement_with_true_reward`
        computed, and from how many pairs)."""
        counts = self.agreement_counts()
        if not counts["labelled"]:
            return (f"No pair labelled yet ({counts['skipped']} skipped, {self.n_remaining} to go): the "
                    "panel needs a person clicking in Jupyter (Run All, or a run without a browser, "
                    "clicks nothing). Until then, labels_or_simulated() gives the simulated rater's "
                    f"labels of the same {len(self.pairs)} pairs.")
        pairs = lambda n: f"{n} pair{'s' if n != 1 else ''}"  # noqa: E731
        text = f"You labelled {pairs(counts['labelled'])} ({counts['skipped']} skipped). "
        if counts["compared"]:
            text += (f"In {counts['compared']} of them the two answers differ in true reward, and you "
                     f"picked the better one in {counts['agreed']} of {counts['compared']}.")
        else:
            text += "None of them has a better answer by the true reward."
        if counts["ties"]:
            text += (f" {pairs(counts['ties'])} compared two answers of equal true reward (e.g. two wrong "
                     "cities): there is no right choice, so they are left out of that count.")
        return text

    def labels_or_simulated(self, rater=None):
        """Your labels (:meth:`to_dataset`); if you labelled none, the same pairs labelled by
        ``rater`` (default: the simulated rater, ``minirlhf.world.SimulatedRater()``), so that the
        cells that follow have data to work on. Say which it is with :meth:`summary`."""
        data = self.to_dataset()
        if len(data):
            return data
        return label_pairs(self.pairs, rater or world.SimulatedRater())


class LabelingPanel:
    """An ipywidgets panel over a :class:`LabelingSession`: the prompt, two answers, buttons
    "left is better" / "right is better" / "skip" / "undo", and a running count.

    Display it in a notebook (``panel`` as the last line of a cell); when you are done,
    ``panel.session.to_dataset()`` is your preference data. Building it needs no browser, and
    ``panel.buttons["left"].click()`` works in code as in the page. With ``build=False`` no widget
    is created until the panel is displayed in a live notebook (see :func:`live_frontend`);
    displayed anywhere else, it shows the current pair as a static picture.
    """

    def __init__(self, session: LabelingSession, build: bool = True):
        self.session = session
        self.widget = None
        if build:
            self.build()

    def build(self) -> widgets.VBox:
        """Create the widgets (once) and return the panel."""
        if self.widget is not None:
            return self.widget
        self.prompt = widgets.HTML()
        box = widgets.Layout(width="48%", border="1px solid #ccc", padding="6px")
        self.answers = {side: widgets.HTML(layout=box) for side in ("left", "right")}
        labels = {"left": "left is better", "right": "right is better", "skip": "skip",
                  "undo": "undo"}
        self.buttons = {name: widgets.Button(description=text) for name, text in labels.items()}
        for name in LabelingSession.CHOICES:
            self.buttons[name].on_click(lambda _, name=name: self._choose(name))
        self.buttons["undo"].on_click(lambda _: self._undo())
        self.count = widgets.HTML()
        self.widget = widgets.VBox([
            self.prompt,
            widgets.HBox([self.answers["left"], self.answers["right"]]),
            widgets.HBox([self.buttons[n] for n in ("left", "right", "skip", "undo")]),
            self.count,
        ])
        self.refresh()
        return self.widget

    def _choose(self, choice: str) -> None:
        if not self.session.done:
            self._act(lambda: self.session.choose(choice))
        self.refresh_keeping_errors()

    def _undo(self) -> None:
        if self.session.choices:
            self._act(self.session.undo)
        self.refresh_keeping_errors()

    def _act(self, action) -> None:
        """Run a button's ``action``; a failed save is shown in the panel (the click is then undone)."""
        self._error = None
        try:
            action()
        except (OSError, ValueError) as error:
            self._error = str(error)

    def refresh_keeping_errors(self) -> None:
        """:meth:`refresh`, then the message of a failed save, if any, under the count."""
        self.refresh()
        if self.widget is not None and getattr(self, "_error", None):
            self.count.value += f"<br><b>Not saved:</b> {html.escape(self._error)}"

    def refresh(self) -> None:
        """Redraw from the session's state."""
        if self.widget is None:
            return
        current = self.session.current
        if current is None:
            self.prompt.value = ("<b>All pairs done.</b> Your data: "
                                 "<code>panel.session.to_dataset()</code>")
            for side in self.answers:
                self.answers[side].value = ""
        else:
            prompt, left, right = current
            self.prompt.value = f"<b>Prompt:</b> {html.escape(prompt)}"
            self.answers["left"].value = html.escape(left)
            self.answers["right"].value = html.escape(right)
        for name in LabelingSession.CHOICES:
            self.buttons[name].disabled = current is None
        self.buttons["undo"].disabled = not self.session.choices
        summary = self.session.summary() if self.session.n_labeled else ""
        self.count.value = html.escape(self.session.status()) + (f"<br><small>{html.escape(summary)}</small>"
                                                                 if summary else "")

    def static_html(self) -> str:
        """The panel's current state as plain HTML (no buttons that do anything)."""
        current = self.session.current
        if current is None:
            return f"<p><b>All pairs done.</b> {html.escape(self.session.status())}</p>"
        prompt, left, right = (html.escape(t) for t in current)
        cell = 'style="width:48%;border:1px solid #ccc;padding:6px;vertical-align:top"'
        buttons = " ".join(f"<code>[{label}]</code>" for label in
                           ("left is better", "right is better", "skip", "undo"))
        return (f"<p><b>Prompt:</b> {prompt}</p>"
                f"<table><tr><td {cell}>{left}</td><td {cell}>{right}</td></tr></table>"
                f"<p>{buttons}<br>{html.escape(self.session.status())}</p>")

    def _ipython_display_(self):
        if live_frontend():
            display(self.build())
            return
        current = self.session.current
        text = (f"Prompt: {current[0]}\n  left:  {current[1]}\n  right: {current[2]}"
                if current is not None else "All pairs done.")
        display({"text/plain": text, "text/html": self.static_html()}, raw=True)
        show_note("A static picture of the first pair: run this cell in Jupyter to click "
                  "through the pairs.")


def labeling_panel(model, tokenizer, n_pairs: int = 20, prompts: list[str] | None = None,
                   seed: int = 0, save_to: str | Path | None = None) -> LabelingPanel:
    """A labeling panel over ``n_pairs`` answer pairs sampled from ``model`` (the SFT model).
    Its widgets are created when it is displayed in a live notebook (none in headless runs).

    ``save_to`` (e.g. ``"my_labels.json"``): every click is saved there at once, and when the file
    already holds a saved session (say, before the kernel restarted) the panel takes it up where it
    stopped, with its own pairs; a file that is not a saved session is refused, never overwritten."""
    if save_to is not None and os.path.lexists(save_to):
        session = LabelingSession.load(save_to)
    else:
        session = LabelingSession.from_model(model, tokenizer, prompts, n_pairs, seed, save_to=save_to)
    return LabelingPanel(session, build=live_frontend())
