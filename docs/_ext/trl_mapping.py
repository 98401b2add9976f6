"""Every field of every minirlhf ``*Config``, and its counterpart in TRL.

Keys are ``module.ClassName``; each maps to TRL's config class and, per field, ``(TRL field or
None, note)``. The docs build fails (a warning, and the build runs with ``-W``) when a config or a
field of minirlhf has no entry here, so the "where to go next" page never falls behind the code.

Field names are those of TRL 1.x: ``trl.SFTConfig``, ``trl.RewardConfig``, ``trl.DPOConfig`` (all
subclasses of ``transformers.TrainingArguments``), and for PPO ``trl.experimental.ppo.PPOConfig``
(TRL 1.12 is the last release with a PPO trainer; before 1.0 it was ``trl.PPOConfig``).
"""

_PROGRESS = ("disable_tqdm", "inverted: `disable_tqdm=not progress`.")
_SEED = ("seed", "")
_CLIP = ("max_grad_norm", "TRL's default is also 1.0.")
_EMBEDDING_LR = (None, ("TRL trains every parameter at one rate; for another rate on the embeddings pass "
                        "a custom optimizer (`optimizers=...`)."))

_FROZEN_BLOCKS = (None, ("TRL trains every parameter it is given; to keep the first blocks fixed, set "
                         "`requires_grad_(False)` on their parameters before building the trainer (or "
                         "train a PEFT adapter on the later ones)."))

_DPO_FIELDS = {
            "beta": ("beta", ""),
            "loss_type": ("loss_type", ("`\"sigmoid\"` and `\"ipo\"` exist in both; TRL's IPO divides each "
                                        "answer's log-ratio by its length, minirlhf's follows the paper.")),
            "simpo_gamma": ("simpo_gamma", ("of `trl.experimental.cpo.CPOConfig(loss_type=\"simpo\")`: TRL "
                                            "1.16's `DPOTrainer` has no SimPO; its CPO with `cpo_alpha` = "
                                            "`rpo_alpha` is minirlhf's `loss_type=\"simpo\"`.")),
            "label_smoothing": ("label_smoothing", ("conservative DPO (Mitchell 2023); TRL 1.16's "
                                                    "`\"sigmoid\"` ignores it, and its `\"robust\"` loss "
                                                    "is another formula.")),
            "rpo_alpha": ("loss_weights", ("the chosen answers' NLL per token added to the loss: TRL 1.16's "
                                           "`loss_type=[\"sigmoid\", \"sft\"]` with `loss_weights=[1.0, "
                                           "rpo_alpha]` (before 1.16, `rpo_alpha`).")),
            "learning_rate": ("learning_rate", ("TRL's default (1e-6) is for billion-parameter models; "
                                                "the tiny GPT needs about 1e-4 to 1e-3.")),
            "epochs": ("num_train_epochs", ""),
            "batch_size": ("per_device_train_batch_size", "pairs per device and step."),
            "warmup_steps": ("warmup_steps", "with `lr_scheduler_type=\"cosine\"`."),
            "weight_decay": ("weight_decay", ""),
            "adam_beta2": ("adam_beta2", ""),
            "adam_epsilon": ("adam_epsilon", ""),
            "max_grad_norm": _CLIP,
            "embedding_lr_scale": _EMBEDDING_LR,
            "frozen_blocks": _FROZEN_BLOCKS,
            "seed": _SEED,
            "log_every": ("logging_steps", ""),
            "eval_every": ("eval_steps", "with `eval_strategy=\"steps\"`."),
            "progress": _PROGRESS,
}

MAPPING = {
    "minirlhf.sft.SFTConfig": {
        "trl": "trl.SFTConfig",
        "intro": ("TRL masks the prompt as minirlhf does when the data set has `prompt` and `completion` "
                  "columns (`completion_only_loss`, on by default for such data). minirlhf always clips "
                  "the gradient norm at 1.0, TRL's `max_grad_norm` default."),
        "fields": {
            "steps": ("max_steps", "or `num_train_epochs`."),
            "batch_size": ("per_device_train_batch_size",
                           "times `gradient_accumulation_steps` times the number of GPUs."),
            "learning_rate": ("learning_rate", ("TRL's default (2e-5) suits pretrained checkpoints; a "
                                                "random tiny GPT needs 3e-3.")),
            "warmup_steps": ("warmup_steps", "with `lr_scheduler_type=\"cosine\"` for the same schedule."),
            "weight_decay": ("weight_decay", ""),
            "seed": _SEED,
            "log_every": ("logging_steps", ""),
            "progress": _PROGRESS,
        },
    },
    "minirlhf.reward.RewardConfig": {
        "trl": "trl.RewardConfig",
        "intro": ("TRL's `RewardTrainer` minimises the same Bradley-Terry loss, reading the score at the "
                  "last token, on the same `prompt` / `chosen` / `rejected` columns. It also offers "
                  "`center_rewards_coefficient` (a penalty on the mean score), which minirlhf does not need: "
                  "only score differences matter to Bradley-Terry."),
        "fields": {
            "steps": ("max_steps", ""),
            "batch_size": ("per_device_train_batch_size", "pairs per device and step."),
            "learning_rate": ("learning_rate", ""),
            "head_learning_rate": (None, ("TRL uses one rate for all weights; pass your own optimizer with "
                                          "two parameter groups as `RewardTrainer(optimizers=...)`.")),
            "warmup_steps": ("warmup_steps", "with `lr_scheduler_type=\"cosine\"`."),
            "weight_decay": ("weight_decay", ""),
            "max_grad_norm": _CLIP,
            "seed": _SEED,
            "log_every": ("logging_steps", ""),
            "eval_every": ("eval_steps", "with `eval_strategy=\"steps\"`."),
            "progress": _PROGRESS,
        },
    },
    "minirlhf.ppo.PPOConfig": {
        "trl": "trl.experimental.ppo.PPOConfig",
        "intro": ("TRL's PPO has the same structure: a k1 KL penalty on every token and the score at the "
                  "last one, GAE, whitened advantages, the clipped policy and value losses, and a separate "
                  "critic (TRL starts it from the reward model). Its batch sizes count *rollouts*: "
                  "`per_device_train_batch_size * gradient_accumulation_steps * n_gpus` per PPO step."),
        "fields": {
            "beta": ("kl_coef", "TRL's default is 0.05."),
            "adaptive_kl": (None, ("TRL's current PPO keeps `kl_coef` fixed; the pre-1.0 `trl.PPOConfig` "
                                   "had `adap_kl_ctrl`.")),
            "target_kl": (None, "the pre-1.0 `trl.PPOConfig` called it `target`."),
            "horizon": (None, "the pre-1.0 `trl.PPOConfig` had `horizon` too."),
            "gamma": ("gamma", ""),
            "lam": ("lam", ""),
            "clip_range": ("cliprange", ""),
            "clip_range_value": ("cliprange_value", ""),
            "whiten_advantages": (None, ("TRL always whitens the advantages; its `whiten_rewards` is "
                                         "another option (it normalises the rewards).")),
            "vf_coef": ("vf_coef", ""),
            "epochs": ("num_ppo_epochs", ""),
            "minibatches": ("num_mini_batches", ""),
            "rollouts_per_step": ("per_device_train_batch_size",
                                  "times `gradient_accumulation_steps` times the number of GPUs."),
            "temperature": ("temperature", "TRL's default is 0.7."),
            "max_new_tokens": ("response_length", ""),
            "missing_eos_penalty": ("missing_eos_penalty", ""),
            "reward_refresh_every": (None, ("TRL's PPO keeps its reward model fixed; to refresh it, label "
                                            "the policy's samples and retrain between `train()` calls.")),
            "refresh_pairs_per_prompt": (None, "see `reward_refresh_every`."),
            "learning_rate": ("learning_rate", ("minirlhf's None means min(3e-4, 1e-4 / beta); TRL's rate "
                                                "does not depend on its `kl_coef`. TRL's default schedule "
                                                "is also a linear decay.")),
            "embedding_lr_scale": _EMBEDDING_LR,
            "frozen_blocks": _FROZEN_BLOCKS,
            "critic_lr_scale": (None, ("TRL's critic (`value_model`) shares the policy's `learning_rate`; "
                                       "give it its own with a custom optimizer (`optimizers=...`).")),
            "adam_eps": ("adam_epsilon", ""),
            "warmup_steps": ("warmup_steps", ""),
            "max_grad_norm": _CLIP,
            "steps": ("total_episodes", "TRL counts rollouts: `total_episodes = steps * rollouts_per_step`."),
            "seed": _SEED,
            "eval_every": ("num_sample_generations", ("TRL prints sample generations during training; "
                                                      "the exact evaluation is minirlhf's own.")),
            "progress": _PROGRESS,
        },
    },
    "minirlhf.dpo.DPOConfig": {
        "trl": "trl.DPOConfig",
        "intro": ("minirlhf's DPO loss is TRL's `loss_type=\"sigmoid\"`, and with `rpo_alpha` TRL's RPO; its "
                  "metrics carry TRL's names (`rewards/chosen`, `rewards/margins`, ...). Like TRL's "
                  "`DPOTrainer`, `train_dpo` learns from the pairs it is given and nothing else."),
        "fields": _DPO_FIELDS,
    },
    "minirlhf.online_dpo.OnlineDPOConfig": {
        "trl": "trl.experimental.online_dpo.OnlineDPOConfig",
        "intro": ("TRL's `OnlineDPOTrainer` also samples two answers per prompt from the current policy "
                  "and has them judged (by a `judge` or a reward model) at every step."),
        "fields": {
            **_DPO_FIELDS,
            "rounds": ("max_steps", "one round of fresh pairs per step."),
            "pairs_per_prompt": (None, "`OnlineDPOTrainer` samples two answers per prompt and step."),
            "temperature": ("temperature", ""),
            "eval_every": ("eval_steps", "with `eval_strategy=\"steps\"`; minirlhf counts rounds."),
        },
    },
    "minirlhf.kto.KTOConfig": {
        "trl": "trl.KTOConfig",
        "intro": ("TRL's `KTOTrainer` learns from TRL's unpaired format (`prompt`, `completion`, `label`) with "
                  "the same loss (`loss_type=\"kto\"`) and the same reference point from mismatched pairs "
                  "(`minirlhf.integrations.trl.kto_args`). TRL builds those pairs from consecutive rows, once: "
                  "shuffle the rows first (`kto_dataset`), or answers to one prompt pair with each other."),
        "fields": {
            "beta": ("beta", ""),
            "desirable_weight": ("desirable_weight", ""),
            "undesirable_weight": ("undesirable_weight", ""),
            "learning_rate": ("learning_rate", "TRL's default (5e-7) is for billion-parameter models."),
            "epochs": ("num_train_epochs", ""),
            "batch_size": ("per_device_train_batch_size", "answers per device and step."),
            "warmup_steps": ("warmup_steps", "with `lr_scheduler_type=\"cosine\"`."),
            "weight_decay": ("weight_decay", ""),
            "adam_beta2": ("adam_beta2", ""),
            "adam_epsilon": ("adam_epsilon", ""),
            "max_grad_norm": _CLIP,
            "embedding_lr_scale": _EMBEDDING_LR,
            "frozen_blocks": _FROZEN_BLOCKS,
            "seed": _SEED,
            "progress": _PROGRESS,
        },
    },
    "minirlhf.grpo.GRPOConfig": {
        "trl": "trl.GRPOConfig",
        "intro": ("TRL's `GRPOTrainer` samples `num_generations` answers per prompt, computes group-relative "
                  "advantages and minimises the same clipped surrogate, with a k3 KL estimate in the loss "
                  "when `beta > 0` (minirlhf's `kl=\"loss\"`). TRL's `RLOOTrainer` (`trl.RLOOConfig`) is the "
                  "leave-one-out counterpart, with the KL in the reward (`advantage=\"rloo\"`, `kl=\"reward\"`: "
                  "`rloo_args`). TRL counts its batch in answers, not prompts."),
        "fields": {
            "beta": ("beta", "TRL's recent default is 0 (no KL term)."),
            "kl": (None, ("TRL's GRPO puts k3 in the loss; k1 in the reward (minirlhf's default, PPO's "
                          "place) has no GRPO switch.")),
            "advantage": ("scale_rewards", ("`scale_rewards` on (per group) is GRPO, off with "
                                            "`loss_type=\"dr_grpo\"` is Dr. GRPO; RLOO is `RLOOTrainer`.")),
            "length_normalise": ("loss_type", ("`\"grpo\"` averages over each answer's tokens; "
                                               "`\"dr_grpo\"` divides the summed tokens by a constant.")),
            "group_size": ("num_generations", ""),
            "prompts_per_step": ("per_device_train_batch_size",
                                 "TRL counts answers: `prompts_per_step * group_size` per step."),
            "distinct_prompts": (None, ("TRL's sampler always gives a step distinct prompts (the first of a "
                                        "fresh shuffle of the prompts); minirlhf's default draws with replacement.")),
            "loss_type": ("loss_type", ("the same names and aggregations (`grpo`, `bnpo`, `dr_grpo`, `dapo`, "
                                        "`cispo`); minirlhf's None follows `length_normalise`; TRL's "
                                        "default is `\"dapo\"`.")),
            "epsilon_high": ("epsilon_high", "DAPO's clip-higher; CISPO's cap on the importance weight."),
            "importance_sampling_level": ("importance_sampling_level", "`\"sequence\"` is GSPO."),
            "dynamic_sampling": (None, "TRL 1.16 has no dynamic sampling (dropping groups of equal rewards)."),
            "mask_truncated_completions": ("mask_truncated_completions", "DAPO's overlong filter."),
            "soft_punish_cache": (None, ("TRL's is a reward function: "
                                         "`trl.rewards.get_soft_overlong_punishment(max_completion_len, "
                                         "soft_punish_cache)`.")),
            "use_bias_correction_kl": ("use_bias_correction_kl", ("TRL's default is True: its k3 term then "
                                                                  "has the gradient of KL(pi || pi_ref).")),
            "epochs": ("num_iterations", "TRL's default is 1 (one gradient step per batch of answers)."),
            "minibatches": ("steps_per_generation", "or `gradient_accumulation_steps`."),
            "clip_range": ("epsilon", ""),
            "temperature": ("temperature", ""),
            "max_new_tokens": ("max_completion_length", ""),
            "missing_eos_penalty": (None, ("TRL can drop answers cut without EOS from the loss "
                                           "(`mask_truncated_completions`), or score them in the reward "
                                           "function.")),
            "reward_refresh_every": (None, "TRL keeps its reward functions fixed; see PPOConfig's note."),
            "refresh_pairs_per_prompt": (None, "see `reward_refresh_every`."),
            "learning_rate": ("learning_rate", "minirlhf's None means min(3e-4, 1e-4 / beta), as for PPO."),
            "embedding_lr_scale": _EMBEDDING_LR,
            "adam_eps": ("adam_epsilon", ""),
            "frozen_blocks": _FROZEN_BLOCKS,
            "warmup_steps": ("warmup_steps", ""),
            "max_grad_norm": _CLIP,
            "steps": ("max_steps", ""),
            "seed": _SEED,
            "eval_every": ("eval_steps", ("with `eval_strategy=\"steps\"`; the exact evaluation is "
                                          "minirlhf's own.")),
            "progress": _PROGRESS,
        },
    },
}


# ---------------------------------------------------------------------------------------------
# The same knobs in the Ray-based engines
# ---------------------------------------------------------------------------------------------

ENGINES_INTRO = (
    "The main knobs of PPO, GRPO and DPO in the two Ray-based engines, beside TRL's (from `MAPPING` "
    "above). OpenRLHF's are the flags of `openrlhf.cli.train_ppo_ray` and `train_dpo` as of 0.8-0.9; newer "
    "releases group them by prefix (`--data.chosen_key`, ...): check `--help` of your version. verl's are "
    "the Hydra keys of `verl.trainer.main_ppo` (`ppo_trainer.yaml`); verl has no offline DPO trainer.")

ENGINES = {
    "minirlhf.ppo.PPOConfig": {
        "beta": ("--init_kl_coef", "algorithm.kl_ctrl.kl_coef"),
        "adaptive_kl": ("--kl_target (adaptive when set)", "algorithm.kl_ctrl.type=adaptive"),
        "target_kl": ("--kl_target", "algorithm.kl_ctrl.target_kl"),
        "horizon": ("--kl_horizon", "algorithm.kl_ctrl.horizon"),
        "gamma": ("--gamma", "algorithm.gamma"),
        "lam": ("--lambd", "algorithm.lam"),
        "clip_range": ("--eps_clip", "actor_rollout_ref.actor.clip_ratio"),
        "clip_range_value": ("--value_clip", "critic.cliprange_value"),
        "epochs": ("--max_epochs", "actor_rollout_ref.actor.ppo_epochs"),
        "rollouts_per_step": ("--rollout_batch_size", "data.train_batch_size"),
        "temperature": ("--temperature", "actor_rollout_ref.rollout.temperature"),
        "max_new_tokens": ("--generate_max_len", "data.max_response_length"),
        "learning_rate": ("--actor_learning_rate", "actor_rollout_ref.actor.optim.lr"),
        "max_grad_norm": ("--max_norm", "actor_rollout_ref.actor.grad_clip"),
        "seed": ("--seed", None),
    },
    "minirlhf.grpo.GRPOConfig": {
        "beta": ("--init_kl_coef", "actor_rollout_ref.actor.kl_loss_coef"),
        "kl": ("--use_kl_loss --kl_estimator k3 (loss); default k1 (reward)",
               "actor_rollout_ref.actor.use_kl_loss, kl_loss_type=low_var_kl (k3); "
               "algorithm.use_kl_in_reward"),
        "advantage": ("--advantage_estimator group_norm, dr_grpo or rloo",
                      "algorithm.adv_estimator=grpo or rloo; algorithm.norm_adv_by_std_in_grpo"),
        "length_normalise": (None, "actor_rollout_ref.actor.loss_agg_mode"),
        "group_size": ("--n_samples_per_prompt", "actor_rollout_ref.rollout.n"),
        "prompts_per_step": ("--rollout_batch_size", "data.train_batch_size"),
        "epochs": ("--max_epochs", "actor_rollout_ref.actor.ppo_epochs"),
        "clip_range": ("--eps_clip", "actor_rollout_ref.actor.clip_ratio"),
        "temperature": ("--temperature", "actor_rollout_ref.rollout.temperature"),
        "max_new_tokens": ("--generate_max_len", "data.max_response_length"),
        "learning_rate": ("--actor_learning_rate", "actor_rollout_ref.actor.optim.lr"),
    },
    "minirlhf.dpo.DPOConfig": {
        "beta": ("--beta", None),
        "loss_type": ("--ipo (for \"ipo\")", None),
        "label_smoothing": ("--label_smoothing", None),
        "learning_rate": ("--learning_rate", None),
        "epochs": ("--max_epochs", None),
        "batch_size": ("--micro_train_batch_size (per GPU), --train_batch_size (global)", None),
    },
}
"""Per minirlhf config and field: (OpenRLHF's flag, verl's Hydra key), None where there is none."""
