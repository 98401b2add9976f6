"""minirlhf: a small, readable library that shows LLM alignment end to end.

One subject per module, each stated in its module docstring's first line:

* the toy world and its data: :mod:`~minirlhf.world`, :mod:`~minirlhf.data` (the SFT corpus),
  :mod:`~minirlhf.preferences` (preference pairs), :mod:`~minirlhf.export` (other trainers' formats);
* the model: :mod:`~minirlhf.tokenizer`, :mod:`~minirlhf.models` (the tiny GPT and its checkpoints),
  :mod:`~minirlhf.logprobs` (the one log-prob helper, and sampling);
* one algorithm per file: :mod:`~minirlhf.sft`, :mod:`~minirlhf.reward`, :mod:`~minirlhf.ppo`,
  :mod:`~minirlhf.grpo` (with :mod:`~minirlhf.rl`, what PPO and GRPO share), :mod:`~minirlhf.dpo`,
  :mod:`~minirlhf.online_dpo`;
* the yardstick: :mod:`~minirlhf.optimum` (exact pi*, J*, attainment), :mod:`~minirlhf.evaluation`,
  :mod:`~minirlhf.compare` (the frontier);
* around them: :mod:`~minirlhf.pipeline` (the demo), :mod:`~minirlhf.cli`, :mod:`~minirlhf.plots`,
  :mod:`~minirlhf.widgets`, :mod:`~minirlhf.utils`, :mod:`~minirlhf.exercises` (classroom checks) and
  :mod:`~minirlhf.integrations` (optional bridges to TRL and verl).
"""

__version__ = "0.1.0"
