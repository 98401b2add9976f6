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
