"""Classroom exercises: check a student's implementation of each stage against the library's.

Every check runs the student's function and minirlhf's on hand-made and random cases, and when
they differ says which case failed and why, naming the usual slip (sign flipped, prompt tokens
not masked, reference log-probs missing, ...) with the fix. The exercise notebooks live in
``notebooks/exercises/``; a check cell there reads::

    from minirlhf.exercises import check_sft_loss
    result = check_sft_loss(sft_loss)

=====================  ==================================  ========================================
exercise               the student writes                  check
=====================  ==================================  ========================================
1 SFT loss masking     ``sft_loss``                        :func:`check_sft_loss`
2 Bradley-Terry loss   ``bradley_terry_loss``              :func:`check_bradley_terry_loss`
3 KL reward and GAE    ``per_token_rewards``, ``gae``      :func:`check_per_token_rewards`,
                                                           :func:`check_gae`
4 PPO clipped loss     ``whiten``, ``ppo_policy_loss``     :func:`check_whiten`,
                                                           :func:`check_ppo_policy_loss`
5 DPO loss             ``sequence_logps``, ``dpo_loss``    :func:`check_sequence_logps`,
                                                           :func:`check_dpo_loss`
=====================  ==================================  ========================================
"""

from minirlhf.exercises import dpo, ppo, reward, sft
from minirlhf.exercises.checking import CheckResult, ExerciseCheckFailed
from minirlhf.exercises.dpo import check_dpo_loss, check_sequence_logps
from minirlhf.exercises.ppo import check_gae, check_per_token_rewards, check_ppo_policy_loss, check_whiten
from minirlhf.exercises.reward import check_bradley_terry_loss
from minirlhf.exercises.sft import check_sft_loss

# Every exercise, by the name of the function the student writes (the tests walk this).
EXERCISES = {exercise.function_name: exercise for exercise in (
    sft.EXERCISE, reward.EXERCISE, ppo.REWARD_EXERCISE, ppo.GAE_EXERCISE, ppo.WHITEN_EXERCISE,
    ppo.LOSS_EXERCISE, dpo.SEQUENCE_EXERCISE, dpo.DPO_EXERCISE)}

__all__ = [
    "EXERCISES", "CheckResult", "ExerciseCheckFailed", "check_bradley_terry_loss", "check_dpo_loss",
    "check_gae", "check_per_token_rewards", "check_ppo_policy_loss", "check_sequence_logps",
    "check_sft_loss", "check_whiten",
]
