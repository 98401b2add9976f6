"""minirlhf.integrations.trl: the true reward as TRL's reward function, minirlhf's configs in TRL's
names, and (with the `trl` extra installed) a few steps of TRL's own DPOTrainer and GRPOTrainer on the
tiny GPT, whose logged `exact/attainment` equals minirlhf's own evaluation of the same weights."""

import importlib.util
from pathlib import Path

import pytest

from minirlhf import world
from minirlhf.dpo import DPOConfig
from minirlhf.grpo import GRPOConfig
from minirlhf.integrations.trl import (ExactEvaluationCallback, dpo_args, freeze_like, grpo_args, kto_args,
                                       kto_dataset, rloo_args, simpo_args, true_reward_func)
from minirlhf.kto import KTOConfig
from minirlhf.optimum import ExactEvaluator

ROOT = Path(__file__).resolve().parents[1]
FRANCE = world.make_prompt("France")


def _trl_mapping():
    spec = importlib.util.spec_from_file_location("trl_mapping", ROOT / "docs" / "_ext" / "trl_mapping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MAPPING


def test_true_reward_func_scores_strings_and_chat_messages():
    completions = [" The capital of France is Paris.", "The capital of France is Berlin.", "Paris Paris"]
    assert true_reward_func([FRANCE] * 3, completions) == [1.0, -1.0, -2.0]
    chat = true_reward_func([[{"role": "user", "content": FRANCE}]],
                            [[{"role": "assistant", "content": "The capital of France is Paris."}]])
    assert chat == [1.0]


def test_the_config_translations_use_the_names_the_docs_map():
    """dpo_args / grpo_args and docs/_ext/trl_mapping.py name the same TRL fields."""
    mapping = _trl_mapping()
    for config, args, key in ((DPOConfig(), dpo_args(), "minirlhf.dpo.DPOConfig"),
                              (GRPOConfig(kl="loss"), grpo_args(), "minirlhf.grpo.GRPOConfig"),
                              (KTOConfig(), kto_args(), "minirlhf.kto.KTOConfig")):
        for field, (trl_name, _) in mapping[key]["fields"].items():
            converted = ("learning_rate", "warmup_steps", "steps", "prompts_per_step", "advantage",
                         "length_normalise")  # values translated, not copied
            if trl_name in args and trl_name not in ("loss_type", "loss_weights") and field not in converted:
                assert args[trl_name] == getattr(config, field), field
    assert dpo_args()["loss_type"] == ["sigmoid", "sft"] and dpo_args()["loss_weights"] == [1.0, 1.0]
    assert grpo_args(GRPOConfig(kl="loss", steps=10))["max_steps"] == 10 * 4 * 2  # epochs x minibatches
    with pytest.raises(ValueError, match='kl="loss"'):
        grpo_args(GRPOConfig())
    with pytest.raises(ValueError, match="RLOOTrainer"):
        grpo_args(GRPOConfig(kl="loss", advantage="rloo"))


def test_rloo_kto_and_simpo_args_carry_minirlhfs_settings():
    config = GRPOConfig(advantage="rloo", beta=0.05, clip_range=0.1, steps=10)
    args, grpo = rloo_args(config), grpo_args(GRPOConfig(kl="loss", advantage="dr_grpo", beta=0.05,
                                                         clip_range=0.1, steps=10))
    assert args["normalize_advantages"] is False and args["beta"] == 0.05 and args["epsilon"] == 0.1
    assert all(args[key] == grpo[key] for key in args if key != "normalize_advantages")
    assert "loss_type" not in args and "scale_rewards" not in args  # RLOOConfig has neither
    for wrong in (GRPOConfig(), GRPOConfig(advantage="rloo", kl="loss")):
        with pytest.raises(ValueError, match='advantage="rloo", kl="reward"'):
            rloo_args(wrong)
    assert kto_args(KTOConfig(batch_size=64), processes=2)["per_device_train_batch_size"] == 32
    assert kto_args()["loss_type"] == "kto"
    simpo = simpo_args(DPOConfig(loss_type="simpo", simpo_gamma=0.3, rpo_alpha=0.5))
    assert (simpo["loss_type"], simpo["simpo_gamma"], simpo["cpo_alpha"]) == ("simpo", 0.3, 0.5)
    assert "loss_weights" not in simpo and simpo["learning_rate"] == DPOConfig().learning_rate
    with pytest.raises(ValueError, match="use dpo_args"):
        simpo_args(DPOConfig())


def test_kto_dataset_keeps_trls_mismatched_pairs_mismatched(tmp_path):
    """TRL's KTOTrainer pairs each row with the previous row's answer (within runs of the batch size):
    on rows grouped by prompt, as unpaired_feedback lists them, nearly every such pair shares its prompt;
    kto_dataset's shuffled rows do not."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    from minirlhf.integrations.trl import load_policy, run_args

    countries = [world.country_of_prompt(p) for p in world.prompts("train")[:4]]
    grouped = Dataset.from_dict({
        "prompt": [world.make_prompt(c) for c in countries for _ in range(16)],
        "completion": [world.make_response(c, "correct") for c in countries for _ in range(16)],
        "label": [True, False] * 32})
    policy, ref_model, tokenizer = load_policy()

    def same_prompt_share(rows: Dataset) -> float:
        args = trl.KTOConfig(output_dir=str(tmp_path), **kto_args(KTOConfig(batch_size=8)), **run_args())
        trainer = trl.KTOTrainer(model=policy, ref_model=ref_model, processing_class=tokenizer,
                                 train_dataset=rows, args=args)
        data = trainer.train_dataset
        same = 0
        for i in range(len(data)):
            previous = i - 1 if i % 8 else i + 7  # the row whose answer TRL gives row i as its mismatched one
            assert data[i]["KL_completion_ids"] == data[previous]["completion_ids"]
            same += data[i]["prompt_ids"] == data[previous]["prompt_ids"]
        return same / len(data)

    assert same_prompt_share(grouped) == 1.0
    spelled = kto_dataset(grouped, seed=0)
    assert sorted(spelled["completion"]) == sorted(" " + y for y in grouped["completion"])
    assert same_prompt_share(kto_dataset(grouped, seed=0)) < 0.5


def test_freeze_like_keeps_what_minirlhf_keeps(tiny):
    model, _ = tiny
    freeze_like(model, frozen_blocks=1, embedding_lr_scale=0.0)
    assert not model.transformer.h[0].attn.c_attn.weight.requires_grad
    assert model.transformer.h[1].attn.c_attn.weight.requires_grad
    assert not model.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="custom optimizer"):
        freeze_like(model, embedding_lr_scale=0.1)


# --- TRL's own trainers (skipped without the extra) ----------------------------------------------


def _check_logged_attainment(trainer, callback, ref_model, tokenizer, beta):
    """The last `exact/attainment` in TRL's log history is minirlhf's own number for the final weights."""
    logged = [row for row in trainer.state.log_history if "exact/attainment" in row]
    assert logged[0]["step"] == 0 and logged[0]["exact/attainment"] == pytest.approx(0.0, abs=1e-6)
    assert logged[-1]["step"] == trainer.state.global_step > 0
    ours = ExactEvaluator(ref_model, tokenizer, world.prompts("train")).evaluate(trainer.model.eval(), beta)
    assert logged[-1]["exact/attainment"] == pytest.approx(ours["attainment"], abs=1e-6)
    assert logged[-1]["exact/kl"] == pytest.approx(ours["kl"], abs=1e-6) and ours["kl"] > 0
    assert "exact_held_out/attainment" in logged[-1] and callback.history[-1]["step"] == logged[-1]["step"]
    assert any("loss" in row for row in trainer.state.log_history)  # TRL's own log still happens


def test_trl_dpo_steps_log_the_exact_attainment(tmp_path):
    trl = pytest.importorskip("trl")
    from minirlhf.export import preference_data
    from minirlhf.integrations.trl import load_policy, run_args

    policy, ref_model, tokenizer = load_policy()
    config = DPOConfig(batch_size=16, epochs=1)
    freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
    trainer = trl.DPOTrainer(
        model=policy, ref_model=ref_model, processing_class=tokenizer,
        train_dataset=preference_data()["train"].select(range(64)),
        args=trl.DPOConfig(output_dir=str(tmp_path), logging_steps=2, precompute_ref_log_probs=True,
                           **dpo_args(config), **run_args()))
    callback = ExactEvaluationCallback(ref_model, tokenizer, config.beta, every=2).attach(trainer)
    trainer.train()
    assert trainer.state.global_step == 4
    _check_logged_attainment(trainer, callback, ref_model, tokenizer, config.beta)


def test_trl_grpo_steps_with_the_true_reward_log_the_exact_attainment(tmp_path):
    trl = pytest.importorskip("trl")
    from minirlhf.export import prompt_data
    from minirlhf.integrations.trl import load_policy, run_args

    policy, ref_model, tokenizer = load_policy()
    config = GRPOConfig(kl="loss", steps=3, epochs=1, minibatches=1, prompts_per_step=8)
    trainer = trl.GRPOTrainer(
        model=policy, reward_funcs=true_reward_func, processing_class=tokenizer,
        train_dataset=prompt_data("train"),
        args=trl.GRPOConfig(output_dir=str(tmp_path), logging_steps=1, **grpo_args(config), **run_args()))
    callback = ExactEvaluationCallback(ref_model, tokenizer, config.beta, every=0).attach(trainer)
    trainer.train()
    assert trainer.state.global_step == 3
    assert any("rewards/true_reward_func/mean" in row for row in trainer.state.log_history)
    _check_logged_attainment(trainer, callback, ref_model, tokenizer, config.beta)


def test_the_callback_must_be_attached(tmp_path):
    trl = pytest.importorskip("trl")
    from minirlhf.export import prompt_data
    from minirlhf.integrations.trl import load_policy, run_args

    policy, ref_model, tokenizer = load_policy()
    callback = ExactEvaluationCallback(ref_model, tokenizer, beta=0.1)
    trainer = trl.GRPOTrainer(
        model=policy, reward_funcs=true_reward_func, processing_class=tokenizer, callbacks=[callback],
        train_dataset=prompt_data("train"),
        args=trl.GRPOConfig(output_dir=str(tmp_path), **grpo_args(GRPOConfig(kl="loss", steps=1)),
                            **run_args()))
    with pytest.raises(RuntimeError, match="attach"):
        trainer.train()
