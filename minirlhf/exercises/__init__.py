"""Classroom exercises: check a student's implementation of each stage against the library's.

Every check runs the student's function and minirlhf's on hand-made and random cases, and when
they differ says which case failed and why, naming the usual slip (sign flipped, prompt tokens
not masked, reference log-probs missing, ...) with the fix. The exercise notebooks live in
``notebooks/exercises/``; a check cell there reads::

    from minirlhf.exercises import check_sft_loss
    check_sft_loss(sft_loss)
"""

from minirlhf.exercises import sft
from minirlhf.exercises.checking import CheckResult, ExerciseCheckFailed
from minirlhf.exercises.sft import check_sft_loss

# Every exercise, by the name of the function the student writes (the tests walk this).
EXERCISES = {module.EXERCISE.function_name: module.EXERCISE for module in (sft,)}

__all__ = ["EXERCISES", "CheckResult", "ExerciseCheckFailed", "check_sft_loss"]
