"""Classroom exercises: check a student's implementation of each stage against the library's.

Every check runs the student's function and minirlhf's on hand-made and random cases, and when
they differ says which case failed and why, naming the usual slip (sign flipped, prompt tokens
not masked, reference log-probs missing, ...) with the fix. The exercise notebooks live in
``notebooks/exercises/``; a check cell there reads::

    from minirlhf.exercises import check_sft_loss
    result = check_sft_loss(sft_loss)

The exercises, the functions the student writes, and their checks:

1. SFT loss masking: ``sft_loss``, :func:`~minirlhf.exercises.sft.check_sft_loss`.
2. Bradley-Terry loss: ``bradley_terry_loss``, :func:`~minirlhf.exercises.reward.check_bradley_terry_loss`.
3. Per-token KL reward and GAE: ``per_token_rewards`` and ``gae``,
   :func:`~minirlhf.exercises.ppo.check_per_token_rewards` and :func:`~minirlhf.exercises.ppo.check_gae`.
4. Whitening and the PPO clipped loss: ``whiten`` and ``ppo_policy_loss``,
   :func:`~minirlhf.exercises.ppo.check_whiten` and :func:`~minirlhf.exercises.ppo.check_ppo_policy_loss`.
5. Sequence log-probs and the DPO loss: ``sequence_logps`` and ``dpo_loss``,
   :func:`~minirlhf.exercises.dpo.check_sequence_logps` and :func:`~minirlhf.exercises.dpo.check_dpo_loss`.
6. Group-relative advantages (GRPO, Dr. GRPO, RLOO): ``group_advantages`` and ``token_advantages``,
   :func:`~minirlhf.exercises.grpo.check_group_advantages` and
   :func:`~minirlhf.exercises.grpo.check_token_advantages`.

The machinery (cases, the catalogue of mistakes, the accepted conventions, the feedback) is in
:mod:`minirlhf.exercises.checking`. The classroom kit: :mod:`minirlhf.exercises.capstone` grades a
student's PPO training loop by the exact attainment it reaches, and
:mod:`minirlhf.exercises.autograde` exports the exercises and the capstone to Otter-Grader
(``minirlhf exercises export --format otter DIR``).
"""

from minirlhf.exercises import aggregation, dpo, grpo, ppo, reward, sft
from minirlhf.exercises.aggregation import check_aggregate_loss
from minirlhf.exercises.checking import CheckResult, ExerciseCheckFailed
from minirlhf.exercises.dpo import check_dpo_loss, check_sequence_logps
from minirlhf.exercises.grpo import check_group_advantages, check_token_advantages
from minirlhf.exercises.ppo import check_gae, check_per_token_rewards, check_ppo_policy_loss, check_whiten
from minirlhf.exercises.reward import check_bradley_terry_loss
from minirlhf.exercises.sft import check_sft_loss

# Every exercise, by the name of the function the student writes (the tests walk this).
EXERCISES = {exercise.function_name: exercise for exercise in (
    sft.EXERCISE, reward.EXERCISE, ppo.REWARD_EXERCISE, ppo.GAE_EXERCISE, ppo.WHITEN_EXERCISE,
    ppo.LOSS_EXERCISE, dpo.SEQUENCE_EXERCISE, dpo.DPO_EXERCISE, grpo.ADVANTAGE_EXERCISE,
    grpo.TOKEN_EXERCISE, aggregation.EXERCISE)}

__all__ = [
    "EXERCISES", "CheckResult", "ExerciseCheckFailed", "check_aggregate_loss", "check_bradley_terry_loss",
    "check_dpo_loss",
    "check_gae", "check_group_advantages", "check_per_token_rewards", "check_ppo_policy_loss",
    "check_sequence_logps", "check_sft_loss", "check_token_advantages", "check_whiten",
]
