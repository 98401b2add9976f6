"""ipywidgets explorers for the notebooks.

Each widget keeps its logic in plain Python (testable without a browser) and only draws with
ipywidgets; building a widget never needs a browser, so notebooks run headless under nbval.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from minirlhf.optimum import optimal_policy, with_outside
from minirlhf.plots import plot_distributions


def beta_explorer(evaluator, prompt_index: int = 0, betas=(0.02, 5.0), value: float = 0.5):
    """A slider over beta that redraws pi_ref and pi* for one prompt of ``evaluator``.

    ``evaluator`` is a :class:`minirlhf.optimum.ExactEvaluator`. Small beta: pi* piles onto the
    best answer; large beta: pi* stays with the reference. Returns the widget (display it).
    """
    ref = with_outside(evaluator.ref_set_probs[prompt_index])
    rewards = evaluator.rewards[prompt_index]
    candidates = evaluator.candidates[prompt_index]
    slider = widgets.FloatLogSlider(value=value, base=10, min=math.log10(betas[0]),
                                    max=math.log10(betas[1]),
                                    step=0.05, description="beta", readout_format=".3f")
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            star = optimal_policy(ref, rewards, slider.value)
            fig = plot_distributions({"pi_ref": ref, "pi*": star}, candidates,
                                     title=f"{evaluator.prompts[prompt_index]}  beta={slider.value:.3f}")
            display(fig)
            plt.close(fig)

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, output])


# --- labeling panel (issue 3): be the human rater --------------------------------------------------

class LabelingSession:
    """The labeling panel's logic, free of widgets: a queue of answer pairs and your choices.

    Each item is ``(prompt, left, right)``. :meth:`choose` takes ``"left"``, ``"right"`` or
    ``"skip"`` and moves to the next pair; :meth:`undo` goes back one. :meth:`to_dataset` turns
    your choices into preference data (``prompt``, ``chosen``, ``rejected``, plus the true
    rewards), the same format as :func:`minirlhf.preferences.collect_preferences`.
    """

    CHOICES = ("left", "right", "skip")

    def __init__(self, pairs: list[tuple[str, str, str]]):
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            raise ValueError("No pairs to label: give at least one (prompt, left, right).")
        for i, pair in enumerate(pairs):
            if len(pair) != 3 or not all(isinstance(t, str) for t in pair):
                raise ValueError(f"Pair {i} must be three strings (prompt, left, right), got {pair!r}.")
            if pair[1] == pair[2]:
                raise ValueError(f"Pair {i} shows the same answer twice ({pair[1]!r}); nothing to choose.")
        self.pairs = pairs
        self.choices: list[str] = []  # one per pair labelled so far, in order

    @classmethod
    def from_model(cls, model, tokenizer, prompts: list[str] | None = None, n_pairs: int = 20,
                   seed: int = 0) -> LabelingSession:
        """``n_pairs`` pairs of different answers sampled from ``model`` (the SFT model), spread
        over ``prompts`` (default: the training prompts), in a seeded random order."""
        import random

        from minirlhf import world
        from minirlhf.preferences import sample_response_pairs

        prompts = prompts or world.prompts("train")
        per_prompt = -(-n_pairs // len(prompts))  # ceil
        pairs = sample_response_pairs(model, tokenizer, prompts, per_prompt, seed=seed, progress=False)
        random.Random(seed).shuffle(pairs)
        return cls(pairs[:n_pairs])

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

    def undo(self) -> None:
        """Forget the last choice and show that pair again."""
        if not self.choices:
            raise ValueError("Nothing to undo: no pair has been labelled yet.")
        self.choices.pop()

    def status(self) -> str:
        """A one-line running count, e.g. ``"3 labelled, 1 skipped, 16 to go"``."""
        return f"{self.n_labeled} labelled, {self.n_skipped} skipped, {self.n_remaining} to go"

    def to_dataset(self):
        """Your choices as preference data (skipped pairs left out); an empty Dataset with the
        right columns if you labelled nothing."""
        from datasets import Dataset

        from minirlhf.preferences import preference_row

        rows = []
        for (prompt, left, right), choice in zip(self.pairs, self.choices):
            if choice != "skip":
                chosen, rejected = (left, right) if choice == "left" else (right, left)
                rows.append(preference_row(prompt, chosen, rejected))
        if not rows:
            return Dataset.from_dict({"prompt": [], "chosen": [], "rejected": [],
                                      "chosen_reward": [], "rejected_reward": []})
        return Dataset.from_list(rows)

    def agreement_with_true_reward(self) -> float | None:
        """Fraction of your choices that picked the answer with the higher true reward (pairs of
        equal true reward left out); None if there is none yet."""
        data = self.to_dataset()
        decided = [(c, r) for c, r in zip(data["chosen_reward"], data["rejected_reward"]) if c != r]
        return sum(c > r for c, r in decided) / len(decided) if decided else None


class LabelingPanel:
    """An ipywidgets panel over a :class:`LabelingSession`: the prompt, two answers, buttons
    "left is better" / "right is better" / "skip" / "undo", and a running count.

    Display it in a notebook (``panel`` as the last line of a cell); when you are done,
    ``panel.session.to_dataset()`` is your preference data. Building it needs no browser, and
    ``panel.buttons["left"].click()`` works in code as in the page.
    """

    def __init__(self, session: LabelingSession):
        self.session = session
        self.prompt = widgets.HTML()
        self.answers = {side: widgets.HTML(layout=widgets.Layout(width="48%", border="1px solid #ccc",
                                                                  padding="6px"))
                        for side in ("left", "right")}
        labels = {"left": "left is better", "right": "right is better", "skip": "skip", "undo": "undo"}
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

    def _choose(self, choice: str) -> None:
        if not self.session.done:
            self.session.choose(choice)
        self.refresh()

    def _undo(self) -> None:
        if self.session.choices:
            self.session.undo()
        self.refresh()

    def refresh(self) -> None:
        """Redraw from the session's state."""
        import html

        current = self.session.current
        if current is None:
            self.prompt.value = ("<b>All pairs done.</b> Your data: <code>panel.session.to_dataset()</code>")
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
        self.count.value = self.session.status()

    def _ipython_display_(self):
        display(self.widget)


def labeling_panel(model, tokenizer, n_pairs: int = 20, prompts: list[str] | None = None,
                   seed: int = 0) -> LabelingPanel:
    """A labeling panel over ``n_pairs`` answer pairs sampled from ``model`` (the SFT model)."""
    return LabelingPanel(LabelingSession.from_model(model, tokenizer, prompts, n_pairs, seed))
