"""A teacher's catalogue for the exercise checks, written the way students write code (not the
checks' own wrong implementations): every correct answer passes, whatever its dtype or
formulation, and every usual slip is caught and named."""

import pytest
import torch
import torch.nn.functional as F

from minirlhf.exercises import EXERCISES
from minirlhf.exercises.checking import run_check

# ---------------------------------------------------------------------------------------------
# Correct answers, each written another way than the library


def _last_index(mask):
    return torch.stack([row.nonzero().max() for row in mask])


def sft_boolean_index(logprobs, response_mask):
    return -logprobs[response_mask.bool()].mean()


def sft_float64(logprobs, response_mask):
    return -(logprobs.double() * response_mask.double()).sum() / response_mask.sum()


def sft_where(logprobs, response_mask):
    return -torch.where(response_mask.bool(), logprobs, 0.0).sum() / response_mask.sum()


def sft_loop(logprobs, response_mask):
    total, count = 0.0, 0
    for b in range(logprobs.shape[0]):
        for t in range(logprobs.shape[1]):
            if response_mask[b, t]:
                total = total + logprobs[b, t]
                count += 1
    return -total / count


def bt_softplus(chosen_scores, rejected_scores):
    return F.softplus(rejected_scores - chosen_scores).mean()


def bt_logsumexp(chosen_scores, rejected_scores):
    margin = chosen_scores - rejected_scores
    return torch.logsumexp(torch.stack([torch.zeros_like(margin), -margin]), dim=0).mean()


def bt_cross_entropy(chosen_scores, rejected_scores):
    margin = chosen_scores - rejected_scores
    return F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin))


def bt_float64(chosen_scores, rejected_scores):
    return -F.logsigmoid(chosen_scores.double() - rejected_scores.double()).mean()


def rewards_loop(logprobs, ref_logprobs, scores, response_mask, beta):
    rewards = -beta * (logprobs - ref_logprobs) * response_mask
    for b in range(len(scores)):
        rewards[b, _last_index(response_mask)[b]] += scores[b]
    return rewards


def rewards_one_hot(logprobs, ref_logprobs, scores, response_mask, beta):
    last = F.one_hot(_last_index(response_mask), response_mask.shape[1])
    return torch.where(response_mask.bool(), -beta * (logprobs - ref_logprobs), 0.0) + last * scores[:, None]


def rewards_float64(logprobs, ref_logprobs, scores, response_mask, beta):
    rewards = -beta * (logprobs.double() - ref_logprobs.double()) * response_mask
    return rewards.scatter_add(1, _last_index(response_mask)[:, None], scores.double()[:, None])


def gae_matrix(rewards, values, response_mask, gamma, lam):
    """No loop: A = deltas @ D with D[k, t] = (gamma * lam) ** (k - t) for k >= t."""
    mask = response_mask.to(values.dtype)
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask
    k, t = torch.arange(values.shape[1])[:, None], torch.arange(values.shape[1])[None, :]
    discounts = torch.where(k >= t, (gamma * lam) ** (k - t).clamp(min=0).double(), 0.0).to(values.dtype)
    advantages = (deltas @ discounts) * mask
    return advantages, advantages + values * mask


def gae_float64_rows(rewards, values, response_mask, gamma, lam):
    rewards, values = rewards.double(), values.double()
    advantages = torch.zeros_like(values)
    for b in range(values.shape[0]):
        running, next_value = 0.0, 0.0
        for t in reversed(range(values.shape[1])):
            if not response_mask[b, t]:
                running, next_value = 0.0, 0.0
                continue
            running = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * running
            advantages[b, t], next_value = running, values[b, t]
    return advantages, advantages + values * response_mask


def whiten_torch_var(values, mask, shift_mean=True):
    real = values[mask.bool()]
    out = (values - real.mean()) * torch.rsqrt(real.var(unbiased=False) + 1e-8)
    return (out if shift_mean else out + real.mean()) * mask


def whiten_moments_float64(values, mask, shift_mean=True):
    values, mask = values.double(), mask.double()
    n = mask.sum()
    mean = (values * mask).sum() / n
    var = (values ** 2 * mask).sum() / n - mean ** 2  # E[x^2] - E[x]^2
    out = (values - mean) / torch.sqrt(var + 1e-8)
    return torch.where(mask.bool(), out if shift_mean else out + mean, 0.0)


def ppo_min_of_objective(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = (logprobs - old_logprobs).exp()
    objective = torch.min(ratio * advantages, ratio.clamp(1 - clip_range, 1 + clip_range) * advantages)
    return -objective[mask.bool()].mean()


def ppo_where_with_stats(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs - old_logprobs)
    clipped_ratio = torch.where(ratio > 1 + clip_range, 1 + clip_range,
                                torch.where(ratio < 1 - clip_range, 1 - clip_range, ratio))
    losses = torch.max(-advantages * ratio, -advantages * clipped_ratio)
    loss = (losses * mask).sum() / mask.sum()
    return loss, {"clipfrac": ((ratio - clipped_ratio).abs() > 0).float().mean()}


def ppo_ratio_of_probabilities(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = logprobs.exp() / old_logprobs.exp()
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return (torch.max(-advantages * ratio, -advantages * clipped) * mask).sum() / mask.sum()


def ppo_float64(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs.double() - old_logprobs.double())
    a = advantages.double()
    losses = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
    return (losses * mask).sum() / mask.sum()


def sequence_where(token_logps, response_mask):
    return torch.where(response_mask.bool(), token_logps, 0.0).sum(dim=1)


def sequence_float64(token_logps, response_mask):
    return (token_logps.double() * response_mask).sum(-1)


def sequence_einsum(token_logps, response_mask):
    return torch.einsum("bt,bt->b", token_logps, response_mask.to(token_logps.dtype))


def sequence_rows(token_logps, response_mask):
    return torch.stack([row[keep.bool()].sum() for row, keep in zip(token_logps, response_mask)])


def dpo_softplus(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    margin = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    return F.softplus(-beta * margin)


def dpo_logaddexp(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    logits = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    return torch.logaddexp(torch.zeros_like(logits), -logits)


def dpo_float64(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    pc, pr, rc, rr = (x.double() for x in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                           ref_rejected_logps))
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def dpo_cross_entropy(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    logits = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")


def advantages_loop_float64(rewards, group_size, advantage):
    out = []
    for group in rewards.double().split(group_size):
        mean = group.sum() / group_size
        if advantage == "grpo":
            std = torch.sqrt(((group - mean) ** 2).sum() / (group_size - 1))
            out.append((group - mean) / (std + 1e-4))
        elif advantage == "dr_grpo":
            out.append(group - mean)
        else:
            out.append(torch.stack([r - (group.sum() - r) / (group_size - 1) for r in group]))
    return torch.cat(out)


def advantages_repeat_interleave(rewards, group_size, advantage):
    groups = rewards.reshape(-1, group_size)
    mean = groups.mean(dim=1).repeat_interleave(group_size)
    if advantage == "grpo":
        return (rewards - mean) / (torch.var(groups, dim=1).sqrt().repeat_interleave(group_size) + 1e-4)
    if advantage == "rloo":  # the leave-one-out advantage is Dr. GRPO's times G / (G - 1)
        return group_size / (group_size - 1) * (rewards - mean)
    return rewards - mean


def advantages_std_mean_unflatten(rewards, group_size, advantage):
    groups = rewards.unflatten(0, (-1, group_size))
    std, mean = torch.std_mean(groups, dim=-1, keepdim=True)
    baselines = {"grpo": mean, "dr_grpo": mean,
                 "rloo": (groups.sum(-1, keepdim=True) - groups) / (group_size - 1)}
    advantages = groups - baselines[advantage]
    return (advantages / (std + 1e-4) if advantage == "grpo" else advantages).flatten()


def token_advantages_where(advantages, response_mask):
    return torch.where(response_mask.bool(), advantages.unsqueeze(-1), 0.0)


def token_advantages_float64(advantages, response_mask):
    return advantages.double()[:, None] * response_mask.double()


def token_advantages_einsum(advantages, response_mask):
    return torch.einsum("b,bt->bt", advantages, response_mask.float())


def token_advantages_loop(advantages, response_mask):
    out = torch.zeros(response_mask.shape)
    for b in range(response_mask.shape[0]):
        for t in range(response_mask.shape[1]):
            if response_mask[b, t]:
                out[b, t] = advantages[b]
    return out


# Correct conventions other than the library's (the check accepts them, and its report says how they
# differ at the edges); the definitions of the wrong-looking ones are with the slips below.


def whiten_cleanrl(values, mask, shift_mean=True):
    real = values[mask.bool()]
    out = (values - real.mean()) / (real.std() + 1e-8)  # torch's std divides by n - 1
    return (out if shift_mean else out + real.mean()) * mask


def whiten_trl_unbiased(values, mask, shift_mean=True):
    mask = mask.float()
    mean = (values * mask).sum() / mask.sum()
    var = ((values - mean) ** 2 * mask).sum() / mask.sum() * mask.sum() / (mask.sum() - 1)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def ppo_dual_clip(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs - old_logprobs)
    losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    losses = torch.where(advantages < 0, torch.min(losses, -advantages * 3.0), losses)
    return (losses * mask).sum() / mask.sum()


def gae_rewards_to_go(rewards, values, response_mask, gamma, lam):
    advantages, _ = gae_float64_rows(rewards, values, response_mask, gamma, lam)
    returns = torch.zeros_like(advantages)
    for b in range(values.shape[0]):
        running = 0.0
        for t in reversed(range(values.shape[1])):
            running = (rewards[b, t] + gamma * running) * response_mask[b, t]
            returns[b, t] = running
    return advantages, returns


def advantages_verl(rewards, group_size, advantage):
    groups = rewards.view(-1, group_size)
    if advantage == "grpo":
        return ((groups - groups.mean(-1, keepdim=True)) / (groups.std(-1, keepdim=True) + 1e-6)).flatten()
    return advantages_std_mean_unflatten(rewards, group_size, advantage)


def aggregate_float64_where(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    losses = torch.where(response_mask.bool(), per_token_loss.double(), 0.0)
    if loss_type == "grpo":
        return (losses.sum(1) / response_mask.sum(1)).mean()
    if loss_type == "bnpo":
        return losses.sum() / response_mask.sum()
    if loss_type == "dr_grpo":
        return losses.sum() / (len(per_token_loss) * max_tokens)
    return losses.sum() / tokens_per_minibatch


def aggregate_boolean_index_and_loop(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    mask = response_mask.bool()
    if loss_type == "grpo":
        return torch.stack([row[keep].mean() for row, keep in zip(per_token_loss, mask)]).mean()
    if loss_type == "bnpo":
        return per_token_loss[mask].mean()
    divisor = per_token_loss.shape[0] * max_tokens if loss_type == "dr_grpo" else tokens_per_minibatch
    return per_token_loss[mask].sum() / divisor


CORRECT = [
    ("sft_loss", sft_boolean_index), ("sft_loss", sft_float64), ("sft_loss", sft_where),
    ("sft_loss", sft_loop),
    ("bradley_terry_loss", bt_softplus), ("bradley_terry_loss", bt_logsumexp),
    ("bradley_terry_loss", bt_cross_entropy), ("bradley_terry_loss", bt_float64),
    ("per_token_rewards", rewards_loop), ("per_token_rewards", rewards_one_hot),
    ("per_token_rewards", rewards_float64),
    ("gae", gae_matrix), ("gae", gae_float64_rows),
    ("whiten", whiten_torch_var), ("whiten", whiten_moments_float64),
    ("ppo_policy_loss", ppo_min_of_objective), ("ppo_policy_loss", ppo_where_with_stats),
    ("ppo_policy_loss", ppo_ratio_of_probabilities), ("ppo_policy_loss", ppo_float64),
    ("ppo_policy_loss", ppo_dual_clip),  # verl's dual clip: no case has a ratio above 3 on a bad token
    ("sequence_logps", sequence_where), ("sequence_logps", sequence_float64),
    ("sequence_logps", sequence_einsum), ("sequence_logps", sequence_rows),
    ("dpo_loss", dpo_softplus), ("dpo_loss", dpo_logaddexp), ("dpo_loss", dpo_float64),
    ("dpo_loss", dpo_cross_entropy),
    ("group_advantages", advantages_loop_float64), ("group_advantages", advantages_repeat_interleave),
    ("group_advantages", advantages_std_mean_unflatten),
    ("token_advantages", token_advantages_where), ("token_advantages", token_advantages_float64),
    ("token_advantages", token_advantages_einsum), ("token_advantages", token_advantages_loop),
    ("aggregate_loss", aggregate_float64_where), ("aggregate_loss", aggregate_boolean_index_and_loop),
]


@pytest.mark.parametrize("exercise, answer", CORRECT, ids=lambda v: getattr(v, "__name__", v))
def test_a_correct_answer_written_another_way_passes(exercise, answer):
    result = run_check(EXERCISES[exercise], answer, verbose=False, raise_on_failure=False)
    assert result.passed, result.report()


def test_every_exercise_has_correct_alternatives_including_float64():
    assert {exercise for exercise, _ in CORRECT} == set(EXERCISES)
    assert {exercise for exercise, answer in CORRECT if "float64" in answer.__name__} >= {
        "sft_loss", "sequence_logps", "dpo_loss", "ppo_policy_loss", "whiten", "gae", "group_advantages",
        "token_advantages", "aggregate_loss"}


# ---------------------------------------------------------------------------------------------
# Wrong answers, as students write them, with the slip the check must name


def sft_sliced_shift(logprobs, response_mask):
    return -(logprobs[:, :-1] * response_mask[:, 1:]).sum() / response_mask[:, 1:].sum()


def sft_shift_the_other_way(logprobs, response_mask):
    return -(logprobs[:, 1:] * response_mask[:, :-1]).sum() / response_mask.sum()


def sft_rolled(logprobs, response_mask):
    return -(logprobs * torch.roll(response_mask, 1, dims=1)).sum() / response_mask.sum()


def sft_without_eos(logprobs, response_mask):
    mask = response_mask.clone()
    for b in range(mask.shape[0]):
        mask[b, _last_index(response_mask)[b]] = 0
    return -(logprobs * mask).sum() / mask.sum()


def sft_last_column_cut(logprobs, response_mask):
    return -logprobs[:, :-1][response_mask[:, :-1].bool()].mean()


def sequence_product(token_logps, response_mask):
    return torch.log(torch.prod(torch.exp(token_logps * response_mask), dim=-1))


def sequence_product_float64(token_logps, response_mask):
    return (token_logps.double().exp() ** response_mask).prod(-1).log()


def sequence_sliced_shift(token_logps, response_mask):
    return (token_logps[:, :-1] * response_mask[:, 1:]).sum(-1)


def sequence_shift_the_other_way(token_logps, response_mask):
    return (token_logps[:, 1:] * response_mask[:, :-1]).sum(-1)


def sequence_without_eos(token_logps, response_mask):
    keep = response_mask.clone()
    keep[torch.arange(len(keep)), _last_index(response_mask)] = 0
    return torch.where(keep.bool(), token_logps, 0.0).sum(-1)


def gae_gamma_lambda_swapped(rewards, values, response_mask, gamma, lam):
    advantages = torch.zeros_like(values)
    next_value, next_advantage = torch.zeros(len(values)), torch.zeros(len(values))
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + lam * next_value - values[:, t]
        advantages[:, t] = (delta + lam * gamma * next_advantage) * response_mask[:, t]
        next_value, next_advantage = values[:, t] * response_mask[:, t], advantages[:, t]
    return advantages, advantages + values * response_mask


def whiten_epsilon_outside(values, mask, shift_mean=True):
    real = values[mask.bool()]
    out = (values - real.mean()) / (real.std(unbiased=False) + 1e-8)
    return (out if shift_mean else out + real.mean()) * mask


def whiten_no_epsilon(values, mask, shift_mean=True):
    real = values[mask.bool()]
    out = (values - real.mean()) / real.std(unbiased=False)
    return (out if shift_mean else out + real.mean()) * mask


def whiten_cleanrl_no_epsilon(values, mask, shift_mean=True):
    real = values[mask.bool()]
    out = (values - real.mean()) / real.std()
    return (out if shift_mean else out + real.mean()) * mask


def ppo_log_ratio(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = logprobs - old_logprobs
    losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    return losses[mask.bool()].mean()


def ppo_advantage_clipped(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(advantages, 1 - clip_range, 1 + clip_range) * ratio
    return (torch.max(-advantages * ratio, -clipped) * mask).sum() / mask.sum()


def ppo_product_clipped(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs - old_logprobs)
    objective = torch.min(ratio * advantages, torch.clamp(ratio * advantages, 1 - clip_range, 1 + clip_range))
    return -(objective * mask).sum() / mask.sum()


def ppo_per_sequence_means(logprobs, old_logprobs, advantages, mask, clip_range):
    ratio = torch.exp(logprobs - old_logprobs)
    losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    return torch.stack([row[keep.bool()].mean() for row, keep in zip(losses, mask)]).mean()


def bt_log1p_exp(chosen_scores, rejected_scores):
    return torch.log1p(torch.exp(rejected_scores - chosen_scores)).mean()


def _by_advantage(groups, group_size, advantage, std):
    """A student's advantages from (B/G, G) groups, with ``std`` the (broadcastable) std for GRPO."""
    mean = groups.mean(-1, keepdim=True)
    if advantage == "grpo":
        return ((groups - mean) / (std + 1e-4)).flatten()
    if advantage == "dr_grpo":
        return (groups - mean).flatten()
    return (groups - (groups.sum(-1, keepdim=True) - groups) / (group_size - 1)).flatten()


def advantages_batch_std(rewards, group_size, advantage):
    return _by_advantage(rewards.view(-1, group_size), group_size, advantage, rewards.std())


def advantages_whole_batch(rewards, group_size, advantage):
    if advantage == "grpo":
        return (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    if advantage == "dr_grpo":
        return rewards - rewards.mean()
    return rewards - (rewards.sum() - rewards) / (len(rewards) - 1)


def advantages_population_std(rewards, group_size, advantage):
    groups = rewards.view(-1, group_size)
    return _by_advantage(groups, group_size, advantage, groups.std(-1, keepdim=True, correction=0))


def advantages_population_std_from_var(rewards, group_size, advantage):
    groups = rewards.view(-1, group_size)
    return _by_advantage(groups, group_size, advantage, groups.var(-1, unbiased=False, keepdim=True).sqrt())


def _standardised_or_by_advantage(rewards, group_size, advantage, standardise):
    groups = rewards.view(-1, group_size)
    if advantage == "grpo":
        return standardise(groups - groups.mean(-1, keepdim=True), groups).view(-1)
    return _by_advantage(groups, group_size, advantage, None)


def advantages_no_epsilon(rewards, group_size, advantage):
    return _standardised_or_by_advantage(rewards, group_size, advantage,
                                    lambda centred, groups: centred / groups.std(-1, keepdim=True))


def advantages_epsilon_1e8(rewards, group_size, advantage):
    return _standardised_or_by_advantage(rewards, group_size, advantage,
                                    lambda centred, groups: centred / (groups.std(-1, keepdim=True) + 1e-8))


def advantages_epsilon_in_root(rewards, group_size, advantage):
    return _standardised_or_by_advantage(rewards, group_size, advantage,
                                    lambda centred, groups: centred / torch.sqrt(
                                        groups.var(-1, keepdim=True) + 1e-4))


def advantages_rloo_with_itself(rewards, group_size, advantage):
    groups = rewards.view(-1, group_size)
    mean = groups.mean(-1, keepdim=True)
    if advantage == "grpo":
        return ((groups - mean) / (groups.std(-1, keepdim=True) + 1e-4)).view(-1)
    return (groups - mean).view(-1)  # Dr. GRPO and RLOO alike


def advantages_rloo_over_g(rewards, group_size, advantage):
    groups = rewards.view(-1, group_size)
    if advantage == "rloo":
        return (groups - (groups.sum(-1, keepdim=True) - groups) / group_size).view(-1)
    return _by_advantage(groups, group_size, advantage, groups.std(-1, keepdim=True))


def advantages_dr_grpo_standardised(rewards, group_size, advantage):
    groups = rewards.view(-1, group_size)
    if advantage == "rloo":
        return _by_advantage(groups, group_size, advantage, None)
    mean, std = groups.mean(-1, keepdim=True), groups.std(-1, keepdim=True)
    return ((groups - mean) / (std + 1e-4)).view(-1)


def advantages_interleaved(rewards, group_size, advantage):
    groups = rewards.view(group_size, -1)  # a prompt's answers taken as a column
    mean, std = groups.mean(0), groups.std(0)
    if advantage == "grpo":
        return ((groups - mean) / (std + 1e-4)).view(-1)
    if advantage == "dr_grpo":
        return (groups - mean).view(-1)
    return (groups - (groups.sum(0) - groups) / (group_size - 1)).view(-1)


def advantages_group_size_as_groups(rewards, group_size, advantage):
    groups = rewards.view(group_size, -1)
    n = groups.shape[1]
    mean = groups.mean(1, keepdim=True)
    if advantage == "grpo":
        return ((groups - mean) / (groups.std(1, keepdim=True) + 1e-4)).view(-1)
    if advantage == "dr_grpo":
        return (groups - mean).view(-1)
    return (groups - (groups.sum(1, keepdim=True) - groups) / (n - 1)).view(-1)


def token_advantages_unsqueezed(advantages, response_mask):
    return advantages.unsqueeze(-1)


def token_advantages_expanded(advantages, response_mask):
    return advantages.unsqueeze(1).expand_as(response_mask)


def token_advantages_repeated(advantages, response_mask):
    return advantages[:, None].repeat(1, response_mask.shape[1])


def token_advantages_per_token_share(advantages, response_mask):
    lengths = response_mask.sum(dim=1, keepdim=True)
    return advantages[:, None] * response_mask / lengths


def token_advantages_on_eos(advantages, response_mask):
    out = torch.zeros(response_mask.shape)
    out[torch.arange(len(advantages)), _last_index(response_mask)] = advantages
    return out


# Correct answers that follow another common convention than the library's: they pass, and the report
# names the convention and where its numbers differ.
CONVENTIONS = [
    ("whiten", whiten_epsilon_outside, "epsilon added to the standard deviation"),
    ("whiten", whiten_cleanrl, "epsilon added to the standard deviation"),
    ("whiten", whiten_trl_unbiased, "the unbiased variance"),
    ("ppo_policy_loss", ppo_per_sequence_means, "the mean of each response's token mean"),
    ("gae", gae_rewards_to_go, "returns as the discounted rewards-to-go"),
    ("group_advantages", advantages_epsilon_1e8, "another epsilon added to the std"),
    ("group_advantages", advantages_verl, "another epsilon added to the std"),
    ("group_advantages", advantages_epsilon_in_root, "epsilon under the square root"),
]


@pytest.mark.parametrize("exercise, answer, convention", CONVENTIONS,
                         ids=lambda v: getattr(v, "__name__", None))
def test_a_correct_answer_in_another_convention_passes_with_a_note(exercise, answer, convention):
    result = run_check(EXERCISES[exercise], answer, verbose=False, raise_on_failure=False)
    assert result.passed and result.convention is not None, result.report()
    assert result.convention.name.startswith(convention)
    report = result.report()
    assert f"It follows another common convention than the library's: {convention}" in report
    assert f"Note: {result.convention.note}" in report


def aggregate_plain_mean(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    if loss_type == "grpo":
        return per_token_loss.mean(-1).mean()
    if loss_type == "bnpo":
        return per_token_loss.mean()
    divisor = per_token_loss.shape[0] * max_tokens if loss_type == "dr_grpo" else tokens_per_minibatch
    return per_token_loss.sum() / divisor


def aggregate_grpo_by_boolean_index(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    masked = per_token_loss[response_mask.bool()]
    if loss_type in ("grpo", "bnpo"):
        return masked.mean()
    divisor = per_token_loss.shape[0] * max_tokens if loss_type == "dr_grpo" else tokens_per_minibatch
    return masked.sum() / divisor


def aggregate_dr_grpo_over_answers(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    total = (per_token_loss * response_mask).sum()
    if loss_type == "grpo":
        return ((per_token_loss * response_mask).sum(-1) / response_mask.sum(-1)).mean()
    if loss_type == "bnpo":
        return total / response_mask.sum()
    return total / (len(per_token_loss) if loss_type == "dr_grpo" else tokens_per_minibatch)


def aggregate_dr_grpo_longest(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    total = (per_token_loss * response_mask).sum()
    if loss_type == "grpo":
        return ((per_token_loss * response_mask).sum(-1) / response_mask.sum(-1)).mean()
    if loss_type == "bnpo":
        return total / response_mask.sum()
    if loss_type == "dr_grpo":
        return total / (len(per_token_loss) * response_mask.sum(-1).max())
    return total / tokens_per_minibatch


def aggregate_dapo_ignored(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    total = (per_token_loss * response_mask).sum()
    if loss_type == "grpo":
        return ((per_token_loss * response_mask).sum(-1) / response_mask.sum(-1)).mean()
    if loss_type == "dr_grpo":
        return total / (len(per_token_loss) * max_tokens)
    return total / response_mask.sum()


def aggregate_never_divided(per_token_loss, response_mask, loss_type, max_tokens,
        tokens_per_minibatch):
    return (per_token_loss * response_mask).sum()


WRONG = [
    ("sft_loss", sft_sliced_shift, "log-probs shifted by one position (the token before scored)"),
    ("sft_loss", sft_shift_the_other_way, "log-probs shifted by one position (the token after scored)"),
    ("sft_loss", sft_rolled, "log-probs shifted by one position (the token after scored)"),
    ("sft_loss", sft_without_eos, "EOS left out"),
    ("sft_loss", sft_last_column_cut, "EOS left out"),
    ("sequence_logps", sequence_product, "log of the product of the probabilities"),
    ("sequence_logps", sequence_product_float64, "log of the product of the probabilities"),
    ("sequence_logps", sequence_sliced_shift, "log-probs shifted by one position (the token before scored)"),
    ("sequence_logps", sequence_shift_the_other_way,
     "log-probs shifted by one position (the token after scored)"),
    ("sequence_logps", sequence_without_eos, "EOS left out"),
    ("gae", gae_gamma_lambda_swapped, "gamma and lambda swapped"),
    ("whiten", whiten_no_epsilon, "epsilon missing"),
    ("whiten", whiten_cleanrl_no_epsilon, "epsilon missing"),
    ("ppo_policy_loss", ppo_log_ratio, "log-ratio used as the ratio"),
    ("ppo_policy_loss", ppo_advantage_clipped, "advantage clipped instead of the ratio"),
    ("ppo_policy_loss", ppo_product_clipped, "advantage clipped instead of the ratio"),
    ("bradley_terry_loss", bt_log1p_exp, "log(sigmoid(x)) computed in two steps"),
    ("group_advantages", advantages_batch_std, "std over the whole batch, not the group"),
    ("group_advantages", advantages_whole_batch, "mean and std over the whole batch, not the group"),
    ("group_advantages", advantages_population_std,
     "population std (divided by G) instead of the sample std (divided by G - 1)"),
    ("group_advantages", advantages_population_std_from_var,
     "population std (divided by G) instead of the sample std (divided by G - 1)"),
    ("group_advantages", advantages_no_epsilon, "epsilon missing"),
    ("group_advantages", advantages_rloo_with_itself, "RLOO baseline includes the answer itself"),
    ("group_advantages", advantages_rloo_over_g, "leave-one-out sum divided by G"),
    ("group_advantages", advantages_dr_grpo_standardised, "Dr. GRPO divided by the std"),
    ("group_advantages", advantages_interleaved, "groups read as interleaved rows"),
    ("group_advantages", advantages_group_size_as_groups, "group_size read as the number of groups"),
    ("token_advantages", token_advantages_unsqueezed, "advantages not broadcast over the tokens"),
    ("token_advantages", token_advantages_expanded, "prompt and padding tokens get the advantage too"),
    ("token_advantages", token_advantages_repeated, "prompt and padding tokens get the advantage too"),
    ("token_advantages", token_advantages_per_token_share, "advantage divided among the tokens"),
    ("token_advantages", token_advantages_on_eos, "advantage only on the last response token"),
    ("aggregate_loss", aggregate_plain_mean, "padding tokens counted"),
    ("aggregate_loss", aggregate_grpo_by_boolean_index,
     "grpo: token mean over the batch instead of each answer's mean"),
    ("aggregate_loss", aggregate_dr_grpo_over_answers, "Dr. GRPO divided by the number of answers"),
    ("aggregate_loss", aggregate_dr_grpo_longest,
     "Dr. GRPO's constant taken from the batch, not from max_tokens"),
    ("aggregate_loss", aggregate_dapo_ignored, "dapo: divided by this minibatch's tokens"),
    ("aggregate_loss", aggregate_never_divided, "summed, not normalised"),
]


@pytest.mark.parametrize("exercise, answer, slip", WRONG, ids=lambda v: getattr(v, "__name__", None))
@pytest.mark.filterwarnings(r"ignore:std\(\). degrees of freedom")  # a slip's 'group' of one answer
def test_a_usual_slip_written_as_a_student_would_is_caught_and_named(exercise, answer, slip):
    result = run_check(EXERCISES[exercise], answer, verbose=False, raise_on_failure=False)
    assert not result.passed
    assert result.mistake is not None and result.mistake.name == slip, result.report()
    assert f"This looks like a common slip: {slip}." in result.report()
