"""minirlhf: a small, readable library that shows LLM alignment end to end.

One module per idea: :mod:`~minirlhf.world` (the toy world), :mod:`~minirlhf.tokenizer` and
:mod:`~minirlhf.models` (a tiny GPT), :mod:`~minirlhf.logprobs` (the one log-prob helper),
:mod:`~minirlhf.sft`, :mod:`~minirlhf.reward`, :mod:`~minirlhf.ppo`, :mod:`~minirlhf.dpo`,
:mod:`~minirlhf.optimum` (the exact yardstick) and :mod:`~minirlhf.compare`.
"""

__version__ = "0.1.0"
