"""The capstone's grader: a correct PPO loop gets every point; each loop of the catalogue below,
written as a student would (one slip in the correct loop, in a notebook's namespace), is graded low
with its bug named. The runs are a few steps long: the pieces' checks see a bug in the first steps,
and the bar is lowered to -1 so that a broken loop would get the attainment points if the bugs did
not withhold them (the full-budget numbers: benchmarks/capstone.py)."""

import pytest
import torch

from minirlhf.exercises import capstone

IMPORTS = """
import torch
from minirlhf.ppo import rollout, per_token_rewards, gae, ppo_policy_loss, ppo_value_loss
from minirlhf.rl import score_rollouts
from minirlhf.logprobs import token_logprobs
"""

CORRECT = """
def train_ppo_loop(policy, ref_model, critic, tokenizer, prompts, config, generator):
    optimizer = torch.optim.Adam([*policy.parameters(), *critic.parameters()], lr=config.learning_rate)
    for step in range(config.steps):
        rows = torch.randint(len(prompts), (config.rollouts_per_step,), generator=generator).tolist()
        batch = rollout(policy, ref_model, critic, tokenizer, [prompts[i] for i in rows], config, generator)
        mask = batch["response_mask"]
        scores = score_rollouts(batch)
        rewards = per_token_rewards(batch["logprobs"], batch["ref_logprobs"], scores, mask, config.beta)
        advantages, returns = gae(rewards, batch["values"], mask, config.gamma, config.lam)
        for epoch in range(config.epochs):
            order = torch.randperm(config.rollouts_per_step, generator=generator)
            for idx in order.chunk(config.minibatches):
                ids, attention = batch["input_ids"][idx], batch["attention_mask"][idx]
                new_logprobs = token_logprobs(policy, ids, attention)
                old_logprobs = batch["logprobs"][idx]
                policy_loss, _ = ppo_policy_loss(new_logprobs, old_logprobs, advantages[idx], mask[idx],
                                                 config.clip_range)
                value_loss, _ = ppo_value_loss(critic(ids, attention), batch["values"][idx], returns[idx],
                                               mask[idx], config.clip_range_value)
                loss = policy_loss + config.vf_coef * value_loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return policy
"""

# The advantages recomputed in each minibatch from the critic as it is now, with gradients on.
ADVANTAGES_WITH_GRAD = """ids, attention = batch["input_ids"][idx], batch["attention_mask"][idx]
                values = critic(batch["input_ids"], batch["attention_mask"])
                advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)"""

# (name, the line of CORRECT that changes, what it becomes, the bug the grade must name); a slip that
# takes two edits gives two tuples of lines.
BROKEN = [
    ("no KL term", "scores, mask, config.beta)", "scores, mask, 0.0)", "no KL term"),
    ("KL sign flipped", 'per_token_rewards(batch["logprobs"], batch["ref_logprobs"],',
     'per_token_rewards(batch["ref_logprobs"], batch["logprobs"],', "KL sign flipped"),
    ("the reference is the policy", "batch = rollout(policy, ref_model,", "batch = rollout(policy, policy,",
     "the reference is the policy"),
    ("old log-probs recomputed after the update", 'old_logprobs = batch["logprobs"][idx]',
     "old_logprobs = token_logprobs(policy, ids, attention).detach()",
     "old log-probs recomputed after the update"),
    ("old log-probs with gradient", 'old_logprobs = batch["logprobs"][idx]',
     "old_logprobs = token_logprobs(policy, ids, attention)", "old log-probs carry gradient"),
    ("old log-probs from the reference", 'old_logprobs = batch["logprobs"][idx]',
     'old_logprobs = batch["ref_logprobs"][idx]', "old log-probs are the reference's"),
    ("advantages not detached",
     ('advantages, returns = gae(rewards, batch["values"], mask, config.gamma, config.lam)',
      'ids, attention = batch["input_ids"][idx], batch["attention_mask"][idx]'),
     ("pass", ADVANTAGES_WITH_GRAD), "advantages not detached"),
    ("new log-probs under no_grad", "new_logprobs = token_logprobs(policy, ids, attention)",
     "with torch.no_grad():\n                    new_logprobs = token_logprobs(policy, ids, attention)",
     "no gradient reaches the policy"),
    ("loss maximised", "loss = policy_loss + config.vf_coef * value_loss",
     "loss = -(policy_loss + config.vf_coef * value_loss)", "the loss is maximised"),
    ("critic left out", "[*policy.parameters(), *critic.parameters()]", "policy.parameters()",
     "the critic never learns"),
    ("twice the budget", "for step in range(config.steps):", "for step in range(2 * config.steps):",
     "over budget"),
]

# A student's own per_token_rewards (exercise 3) with a slip, used by the correct loop.
OWN_PIECE = """
def per_token_rewards(logprobs, ref_logprobs, scores, response_mask, beta):
    rewards = -beta * (logprobs - ref_logprobs) * response_mask
    rewards[:, -1] += scores
    return rewards
"""

SHORT = {"steps": 2, "rollouts_per_step": 8, "epochs": 2}


def _broken(old, new) -> str:
    """CORRECT with the slip made: each line in ``old`` replaced by its counterpart in ``new``."""
    source = CORRECT
    for before, after in zip(*((old, new) if isinstance(old, tuple) else ((old,), (new,)))):
        source = source.replace(before, after)
    return source


def _loop(source: str):
    """The loop as a notebook would define it: the imports and the code run in one fresh namespace."""
    namespace = {}
    exec(IMPORTS + source, namespace)
    return namespace["train_ppo_loop"]


@pytest.fixture
def any_attainment_passes(monkeypatch):
    """Every run 'reaches' the bar: what is left to decide the grade is the bugs."""
    monkeypatch.setattr(capstone, "BAR", -1.0)


def test_the_catalogue_changes_the_correct_loop():
    for name, old, new, _ in BROKEN:
        assert all(CORRECT.count(line) == 1 for line in (old if isinstance(old, tuple) else (old,))), name
        assert _broken(old, new) != CORRECT
    assert len({bug for *_, bug in BROKEN}) == len(BROKEN)


def test_a_correct_loop_gets_every_point(any_attainment_passes):
    torch.manual_seed(0)
    result = capstone.grade_ppo_loop(_loop(CORRECT), seeds=(0,), verbose=False, **SHORT)
    assert result.bugs == [] and all(probe.passed for probe in result.probes), result.report()
    assert result.points == result.possible == 10
    assert "Well done" in result.report()


@pytest.mark.parametrize("name, old, new, bug", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_loop_is_graded_low_with_its_bug_named(any_attainment_passes, name, old, new, bug):
    result = capstone.grade_ppo_loop(_loop(_broken(old, new)), seeds=(0,), verbose=False, **SHORT)
    assert bug in result.bugs, result.report()
    assert result.attainment_points == 0
    assert result.points <= 3.5, result.report()
    report = result.report()
    assert f"{bug}:" in report and "withheld until the bugs below are fixed" in report


def test_a_slip_in_a_piece_written_by_hand_is_named_by_its_check(any_attainment_passes):
    result = capstone.grade_ppo_loop(_loop(OWN_PIECE + CORRECT), seeds=(0,), verbose=False, **SHORT)
    assert result.bugs == ["per_token_rewards fails its check: score on the last column instead of the "
                           "last response token"], result.report()
    assert result.points <= 3.5


def test_the_exact_figures_say_which_way_a_short_run_fell_short():
    optimum = {"kl": 1.0, "true_reward": 0.9, "reference_reward": -0.3}
    runs = {"wrong way": capstone.SeedRun(0, attainment=-0.4, kl=0.5, true_reward=-0.5),
            "past pi*": capstone.SeedRun(0, attainment=0.5, kl=2.0, true_reward=0.98),
            "barely moved": capstone.SeedRun(0, attainment=0.1, kl=0.1, true_reward=-0.1),
            "not far enough": capstone.SeedRun(0, attainment=0.6, kl=0.8, true_reward=0.5)}
    said = {name: capstone.diagnose_outcome([run], optimum) for name, run in runs.items()}
    assert "wrong way" in said["wrong way"] and "KL penalty is missing or too weak" in said["past pi*"]
    assert "barely moved" in said["barely moved"] and "not far enough" in said["not far enough"]
    assert capstone.diagnose_outcome([capstone.SeedRun(0, attainment=0.95)], optimum) == ""


def test_a_trained_reference_is_a_bug():
    watch = capstone.Watch(lambda: None, None, None, capstone.capstone_config())
    probe = capstone.check_learning(watch, {"policy": True, "critic": True, "reference": True})
    assert probe.passed is False and probe.bug == "the reference model is trained"


def test_a_loop_that_raises_is_graded_and_the_error_shown():
    def crashes(policy, ref_model, critic, tokenizer, prompts, config, generator):
        raise KeyError("values")

    result = capstone.grade_ppo_loop(crashes, seeds=(0,), verbose=False, **SHORT)
    assert result.points < 2 and "the loop raised KeyError" in result.report()


def test_the_hidden_seeds_can_be_set_by_the_teacher(monkeypatch):
    monkeypatch.setenv("MINIRLHF_CAPSTONE_SEEDS", "5, 6")
    assert capstone.hidden_seeds() == (5, 6)
    monkeypatch.setenv("MINIRLHF_CAPSTONE_SEEDS", "five")
    with pytest.raises(ValueError, match="integers separated by commas"):
        capstone.hidden_seeds()


def test_the_todo_stub_is_named_as_a_todo():
    def train_ppo_loop(policy, ref_model, critic, tokenizer, prompts, config, generator):
        raise NotImplementedError("TODO: write train_ppo_loop")

    with pytest.raises(NotImplementedError, match="still a TODO"):
        capstone.check_pieces(train_ppo_loop)


def test_the_quick_check_prints_the_pieces_and_names_a_bug(capsys):
    loop = _loop(_broken(*BROKEN[0][1:3]))  # no KL term
    with pytest.raises(AssertionError, match="Not yet: no KL term"):
        capstone.check_pieces(loop)
    assert "[BUG ] puts a KL penalty" in capsys.readouterr().out
