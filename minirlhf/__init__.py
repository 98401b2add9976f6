"""minirlhf: a small, readable library that shows LLM alignment end to end.

One subject per module, each stated in the first line of its docstring:

* the toy world and its data: :mod:`~minirlhf.world` (countries, prompts, answer styles, the true
  reward), :mod:`~minirlhf.data` (the SFT corpus), :mod:`~minirlhf.preferences` (preference pairs),
  :mod:`~minirlhf.export` (the data in TRL's, OpenRLHF's and verl's formats);
* the model: :mod:`~minirlhf.tokenizer` (the word-level tokenizer), :mod:`~minirlhf.models` (the
  tiny GPT and the tokenizer its weights read), :mod:`~minirlhf.logprobs` (the batch layout and
  log-probs of responses), :mod:`~minirlhf.sampling` (generating answers), :mod:`~minirlhf.pairs`
  (DPO's packed pairs);
* one algorithm per file: :mod:`~minirlhf.sft`, :mod:`~minirlhf.reward`, :mod:`~minirlhf.ppo`,
  :mod:`~minirlhf.grpo` (with :mod:`~minirlhf.grpo_variants`, the 2025 variants of its update, and
  :mod:`~minirlhf.rl`, what PPO and GRPO share), :mod:`~minirlhf.dpo`,
  :mod:`~minirlhf.online_dpo`, :mod:`~minirlhf.kto`; :mod:`~minirlhf.training` holds what every
  training loop shares (seeding, threads, the learning-rate schedule, gradients);
* the yardstick: :mod:`~minirlhf.optimum` (exact pi*, J*, attainment), :mod:`~minirlhf.evaluation`
  (watching and judging a trained model), :mod:`~minirlhf.compare` (the reward-KL frontier),
  :mod:`~minirlhf.cached_runs` (results of long runs that notebooks 05-07 read instead of training);
* saving and loading: :mod:`~minirlhf.saved_models` (models as checkpoint folders, the shipped base
  model), :mod:`~minirlhf.checkpoint_files` (checkpoint folders that a stopped save cannot lose),
  :mod:`~minirlhf.safe_loading` (checks on an untrusted checkpoint), :mod:`~minirlhf.folders`
  (output folders minirlhf owns), :mod:`~minirlhf.files` (files on disk, written safely);
* around them: :mod:`~minirlhf.checks` (input checks), :mod:`~minirlhf.pipeline` (the demo),
  :mod:`~minirlhf.cli` (the command line), :mod:`~minirlhf.plots` (figures), :mod:`~minirlhf.widgets`
  (notebook explorers), :mod:`~minirlhf.exercises` (classroom checks) and
  :mod:`~minirlhf.integrations` (optional bridges to TRL and verl).
"""

__version__ = "0.1.0"
