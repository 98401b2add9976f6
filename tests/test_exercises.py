"""The classroom exercises: the checks pass the library, name the usual mistakes, and explain
others; the exercise notebooks are made from the solutions and fail only at their TODOs."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from minirlhf.exercises import EXERCISES, ExerciseCheckFailed, check_gae, check_sft_loss, check_whiten
from minirlhf.exercises.checking import run_check

ROOT = Path(__file__).resolve().parent.parent
EXERCISE_DIR = ROOT / "notebooks" / "exercises"
ALL = list(EXERCISES.values())
# Every way of writing every catalogued slip: (exercise, mistake, which implementation).
MISTAKES = [(exercise, mistake, i) for exercise in ALL for mistake in exercise.mistakes
            for i in range(len(mistake.implementations))]


def _name(value):
    return getattr(value, "function_name", None) or getattr(value, "name", None)


@pytest.mark.parametrize("exercise", ALL, ids=_name)
def test_the_library_implementation_passes(exercise):
    result = run_check(exercise, exercise.reference, verbose=False)
    assert result.passed, result.report()
    assert "Well done" in result.report()
    assert len(result.cases) >= 5  # hand-made and random


@pytest.mark.parametrize("exercise", ALL, ids=_name)
def test_every_check_knows_at_least_three_common_mistakes(exercise):
    names = [m.name for m in exercise.mistakes]
    assert len(names) >= 3
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("exercise, mistake, variant", MISTAKES,
                         ids=lambda v: str(v) if isinstance(v, int) else _name(v).replace(" ", "-"))
def test_a_common_mistake_fails_the_check_and_is_named(exercise, mistake, variant, capsys):
    with pytest.raises(ExerciseCheckFailed, match=re.escape(f"Likely cause: {mistake.name}.")):
        run_check(exercise, mistake.implementations[variant])
    feedback = capsys.readouterr().out
    assert f"This looks like a common slip: {mistake.name}." in feedback
    assert mistake.fix in feedback
    assert "First failing case:" in feedback  # which case, not only "wrong"


def test_sft_feedback_names_the_failing_case_and_shows_its_numbers():
    def prompt_counted(logprobs, mask):
        return -logprobs.mean()

    result = check_sft_loss(prompt_counted, verbose=False, raise_on_failure=False)
    assert result.mistake.name == "prompt tokens not masked"
    first = result.failed_cases[0]
    assert first.case.name == "prompt tokens present"
    report = result.report()
    assert "logprobs = [[-8.0, -9.0, -1.0, -3.0]]" in report
    assert "loss: expected 2, got 5.25" in report


def test_the_sequence_logps_reference_is_the_librarys_sum(base):
    """Exercise 5a's reference sums like minirlhf.logprobs.sequence_logprobs, on a real batch."""
    from minirlhf.exercises.dpo import masked_sequence_sum
    from minirlhf.logprobs import encode_prompt_response, sequence_logprobs, token_logprobs
    from minirlhf.world import make_prompt

    model, tokenizer = base
    batch = encode_prompt_response(tokenizer, [make_prompt("France"), make_prompt("Japan")],
                                   ["The capital of France is Paris.",
                                    "There are several capitals, but Tokyo is the official capital."])
    with torch.no_grad():
        token_logps = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
        expected = sequence_logprobs(model, batch)
    assert torch.allclose(masked_sequence_sum(token_logps, batch["response_mask"]), expected)


def test_the_token_advantages_reference_is_how_grpo_loss_weighs_the_tokens():
    """Exercise 6b's reference puts A_i on answer i's response tokens as minirlhf.grpo.grpo_loss does:
    at ratio 1, without length normalisation, the loss's gradient on each token is -A_it / N."""
    from minirlhf.exercises.grpo import broadcast_advantages
    from minirlhf.grpo import grpo_loss

    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 0, 1, 0]])
    advantages = torch.tensor([1.5, -0.5, 2.0])
    logprobs = -torch.rand(mask.shape) - 0.1
    logprobs.requires_grad_(True)
    loss, _ = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), advantages, mask, clip_range=0.2,
                        length_normalise=False)
    loss.backward()
    torch.testing.assert_close(-logprobs.grad * mask.sum(), broadcast_advantages(advantages, mask))


def test_the_aggregation_cases_hold_the_numbers_they_state():
    """Exercise 7's hand-made cases: the numbers their descriptions give are the library's."""
    from minirlhf.exercises.aggregation import EXERCISE
    from minirlhf.grpo_variants import aggregate_loss

    cases = {case.name: case.args for case in EXERCISE.make_cases()}
    for name, expected in [("GRPO, a long and a short answer", 3.0), ("BNPO, the same answers", 2.5),
                           ("Dr. GRPO, the same answers", 10 / 16), ("DAPO, the same answers", 10 / 6),
                           ("answers of equal length", 2.5)]:
        torch.testing.assert_close(aggregate_loss(*cases[name].values()), torch.tensor(expected))


def test_the_group_advantage_cases_hold_the_numbers_they_state():
    """The hand-made cases of exercise 6a say their numbers in words; the library gives them."""
    from minirlhf.exercises.grpo import ADVANTAGE_EXERCISE
    from minirlhf.grpo import group_advantages

    cases = {case.name: case.args for case in ADVANTAGE_EXERCISE.make_cases()}
    one_group = cases["GRPO, one group of 4"]
    torch.testing.assert_close(group_advantages(**one_group),
                               torch.tensor([1.0, 0.0, 0.0, -1.0]) / ((2 / 3) ** 0.5 + 1e-4))
    torch.testing.assert_close(group_advantages(**cases["RLOO, the same group"]),
                               torch.tensor([4 / 3, 0.0, 0.0, -4 / 3]))
    same = group_advantages(**cases["every answer scored the same"])
    assert torch.equal(same, torch.zeros(8))  # 0, not nan
    barely = group_advantages(**cases["rewards that barely differ"])
    assert abs(barely[0].item() - 1.091) < 1e-3
    several = cases["three prompts in one batch (GRPO)"]
    assert several["rewards"].shape[0] != several["group_size"] ** 2  # B = G^2 would hide a layout slip
    for case in ADVANTAGE_EXERCISE.make_cases():  # every group's advantages sum to 0
        groups = group_advantages(**case.args).view(-1, case.args["group_size"])
        torch.testing.assert_close(groups.sum(-1), torch.zeros(len(groups)), atol=1e-5, rtol=0)


def test_the_group_advantage_slips_the_issue_names_are_catalogued():
    from minirlhf.exercises.grpo import ADVANTAGE_EXERCISE, TOKEN_EXERCISE

    names = {m.name for m in ADVANTAGE_EXERCISE.mistakes + TOKEN_EXERCISE.mistakes}
    assert {"std over the whole batch, not the group", "mean and std over the whole batch, not the group",
            "RLOO baseline includes the answer itself", "advantages not broadcast over the tokens",
            "prompt and padding tokens get the advantage too",
            "population std (divided by G) instead of the sample std (divided by G - 1)",
            "Dr. GRPO divided by the std"} <= names


def test_a_missing_epsilon_is_named_from_its_nan():
    from minirlhf.exercises import check_group_advantages

    def no_epsilon(rewards, group_size, advantage):
        groups = rewards.view(-1, group_size)
        mean = groups.mean(-1, keepdim=True)
        if advantage == "grpo":
            return ((groups - mean) / groups.std(-1, keepdim=True)).view(-1)
        if advantage == "dr_grpo":
            return (groups - mean).view(-1)
        return (groups - (groups.sum(-1, keepdim=True) - groups) / (group_size - 1)).view(-1)

    result = check_group_advantages(no_epsilon, verbose=False, raise_on_failure=False)
    assert result.mistake.name == "epsilon missing"
    problems = {c.case.name: c.problem for c in result.failed_cases}
    assert "contains inf or nan where the library's is finite" in problems["every answer scored the same"]
    assert "This looks like a common slip: epsilon missing." in result.report()


def test_two_group_advantage_slips_at_once_are_partly_explained():
    def batch_std_and_rloo_with_itself(rewards, group_size, advantage):
        groups = rewards.view(-1, group_size)
        centred = groups - groups.mean(-1, keepdim=True)
        return (centred / (rewards.std() + 1e-4) if advantage == "grpo" else centred).view(-1)

    from minirlhf.exercises import check_group_advantages

    result = check_group_advantages(batch_std_and_rloo_with_itself, verbose=False, raise_on_failure=False)
    assert result.mistake is None
    mistake, explained, failing = result.partial
    assert mistake.name == "RLOO baseline includes the answer itself" and 0 < explained < failing


# --- wrong implementations that are not in the catalogue still get specific feedback -----------


def test_an_unknown_constant_factor_is_spotted():
    result = check_sft_loss(lambda lp, m: -2 * (lp * m).sum() / m.sum(), verbose=False,
                            raise_on_failure=False)
    assert not result.passed and result.mistake is None
    assert any("times 2" in hint for hint in result.hints)


def test_an_unknown_sign_error_is_spotted():
    def weird_but_negated(lp, m):  # right up to the sign, but written unlike the catalogued slip
        return torch.sum(lp * m) / torch.count_nonzero(m)

    result = check_sft_loss(weird_but_negated, verbose=False, raise_on_failure=False)
    assert result.mistake is not None or any("exactly minus" in h for h in result.hints)


def test_a_slip_in_another_accepted_convention_is_still_named():
    def unbiased_and_ignores_shift_mean(values, mask, shift_mean=True):
        real = values[mask.bool()]
        return (values - real.mean()) / (real.var() + 1e-8).sqrt() * mask  # torch.var divides by n - 1

    result = check_whiten(unbiased_and_ignores_shift_mean, verbose=False, raise_on_failure=False)
    assert not result.passed and result.mistake.name == "shift_mean ignored"


def test_two_slips_at_once_are_partly_explained():
    def ignores_shift_mean_and_the_padding(values, mask, shift_mean=True):
        real = values[mask.bool()]
        return (values - real.mean()) / (real.var(unbiased=False) + 1e-8).sqrt()

    result = check_whiten(ignores_shift_mean_and_the_padding, verbose=False, raise_on_failure=False)
    assert result.mistake is None
    mistake, explained, failing = result.partial
    assert mistake.name == "padding not zeroed" and 0 < explained < failing
    assert "Part of this looks like a common slip: padding not zeroed" in result.report()


def test_a_slip_is_named_on_the_shown_case_only_when_it_gives_the_students_numbers_there():
    def forgets_the_mask_for_a_single_row(logprobs, mask):  # a catalogued slip, on one case only
        if logprobs.shape[0] == 1:
            return -logprobs.mean()
        return -(logprobs * mask).sum() / mask.sum()

    result = check_sft_loss(forgets_the_mask_for_a_single_row, verbose=False, raise_on_failure=False)
    assert [c.case.name for c in result.failed_cases] == ["prompt tokens present"]
    assert result.mistake is None and result.partial is None
    assert [m.name for m in result.on_shown_case] == ["prompt tokens not masked"]
    assert ("On this case your result is exactly what a common slip gives: prompt tokens not masked"
            in result.report())

    def sums_when_there_is_no_prompt(logprobs, mask):  # two slips give 6 on the first case
        if mask.all():
            return -logprobs.sum()
        return -(logprobs * mask).sum() / mask.sum()

    result = check_sft_loss(sums_when_there_is_no_prompt, verbose=False, raise_on_failure=False)
    names = [m.name for m in result.on_shown_case]
    assert names == ["sum instead of mean over tokens", "sum over tokens, mean over responses"]
    assert f"exactly what each of these common slips gives: {'; '.join(names)} (" in result.report()


def test_no_slip_is_blamed_when_none_gives_the_students_numbers():
    def counts_very_unlikely_prompt_tokens(logprobs, mask):  # wrong only where the prompt is at -8, -9
        counted = mask | (logprobs < -7.5).long()
        return -(logprobs * counted).sum() / mask.sum()

    result = check_sft_loss(counts_very_unlikely_prompt_tokens, verbose=False, raise_on_failure=False)
    assert [c.case.name for c in result.failed_cases] == ["prompt tokens present"]
    assert result.on_shown_case == []
    assert "common slip" not in result.report()
    assert "Compare your code with the formula" in result.report()


def test_no_slip_is_named_under_a_gradient_or_in_place_message():
    def right_value_zero_gradient(logprobs, mask):
        return -(logprobs.detach() * mask).sum() / mask.sum() + 0 * logprobs.sum()

    def right_value_but_in_place(logprobs, mask):
        logprobs.mul_(mask)
        return -logprobs.sum() / mask.sum()

    for student in (right_value_zero_gradient, right_value_but_in_place):
        result = check_sft_loss(student, verbose=False, raise_on_failure=False)
        assert not result.passed and {c.kind for c in result.failed_cases} <= {"gradient", "in place"}
        assert result.mistake is None and result.on_shown_case == []
        assert "common slip" not in result.report(), result.report()


def test_outputs_in_the_wrong_order_are_spotted():
    from minirlhf.ppo import gae

    def swapped(rewards, values, mask, gamma, lam):
        advantages, returns = gae(rewards, values, mask, gamma, lam)
        return returns, advantages

    result = check_gae(swapped, verbose=False, raise_on_failure=False)
    assert result.mistake.name == "advantages and returns swapped"


def test_a_wrong_shape_is_explained():
    result = check_sft_loss(lambda lp, m: -(lp * m).sum(-1) / m.sum(-1), verbose=False,
                            raise_on_failure=False)
    assert not result.passed
    assert "has shape (1,)" not in result.report()  # the first case is B=1: shape () vs (1,) is fine
    assert "did you forget to reduce" in result.report()


def test_a_detached_loss_is_caught_even_with_the_right_value():
    result = check_sft_loss(lambda lp, m: (-(lp * m).sum() / m.sum()).item(), verbose=False,
                            raise_on_failure=False)
    assert not result.passed
    assert "no gradient flows" in result.failed_cases[0].problem


def test_changing_an_input_in_place_is_caught():
    def in_place(lp, m):
        lp.mul_(m)
        return -lp.sum() / m.sum()

    result = check_sft_loss(in_place, verbose=False, raise_on_failure=False)
    assert not result.passed
    problems = " ".join(c.problem for c in result.failed_cases)
    assert "changed its input 'logprobs' in place" in problems  # seen on a case with a prompt
    assert "instead of `x -= ...`" in problems  # and autograd's complaint is translated


def test_a_crash_is_reported_with_its_message():
    def crashes(lp, m):
        return lp @ m

    result = check_sft_loss(crashes, verbose=False, raise_on_failure=False)
    assert not result.passed
    assert "Your function raised RuntimeError" in result.report()


def test_a_wrong_signature_and_an_index_past_the_end_are_explained():
    result = check_sft_loss(lambda logprobs: -logprobs.mean(), verbose=False, raise_on_failure=False)
    assert "calls your function as sft_loss(logprobs, response_mask)" in result.report()

    def gae_reads_past_the_end(rewards, values, mask, gamma, lam):
        for t in reversed(range(values.shape[1])):
            rewards[:, t] + gamma * values[:, t + 1] - values[:, t]

    result = check_gae(gae_reads_past_the_end, verbose=False, raise_on_failure=False)
    assert "at the last column there is no t + 1" in result.report()


def test_the_todo_stub_raises_not_implemented_with_a_hint():
    def sft_loss(logprobs, response_mask):
        raise NotImplementedError("TODO: write sft_loss")

    with pytest.raises(NotImplementedError, match="still a TODO"):
        check_sft_loss(sft_loss)


def test_a_failed_check_shows_as_one_line_in_a_notebook():
    """In IPython the checks' own exceptions show as one line (the feedback is printed above)."""
    from minirlhf.exercises.checking import StillTodo, _concise_traceback

    shown = []

    class Shell:
        def _showtraceback(self, etype, value, structured_traceback):
            shown.append((etype.__name__, structured_traceback))

    _concise_traceback(Shell(), ExerciseCheckFailed, ExerciseCheckFailed("sft_loss is not right yet"), None)
    _concise_traceback(Shell(), StillTodo, StillTodo("sft_loss is still a TODO"), None)
    assert shown == [("ExerciseCheckFailed", ["ExerciseCheckFailed: sft_loss is not right yet"]),
                     ("NotImplementedError", ["NotImplementedError: sft_loss is still a TODO"])]


def test_passing_something_that_is_not_a_function_is_refused():
    with pytest.raises(TypeError, match="Pass the function itself"):
        check_sft_loss(torch.tensor(1.0))


# --- the notebooks ----------------------------------------------------------------------------


def _make_exercises_module():
    spec = importlib.util.spec_from_file_location("make_exercises", ROOT / "scripts" / "make_exercises.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_solution_blocks_become_todo_stubs():
    make = _make_exercises_module()
    source = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    # hint stays\n    ### BEGIN SOLUTION\n    return x + 1\n"
              "    ### END SOLUTION")
    stripped, found = make.strip_code(source)
    assert found
    assert stripped == ("def f(x):\n    \"\"\"Doc.\"\"\"\n    # hint stays\n"
                        "    # TODO: replace the next line with your code.\n"
                        "    raise NotImplementedError(\"TODO: write f\")")
    with pytest.raises(ValueError, match="without"):
        make.strip_code("### BEGIN SOLUTION\nx = 1\n")


def test_every_exercise_notebook_is_made_from_its_solution():
    assert _make_exercises_module().main(["--check"]) == 0, "run `python scripts/make_exercises.py`"
    exercises = sorted(p.name for p in EXERCISE_DIR.glob("[0-9]*.ipynb"))
    assert exercises == sorted(p.name for p in (EXERCISE_DIR / "solutions").glob("[0-9]*.ipynb"))
    assert len(exercises) >= 1


EXERCISE_NOTEBOOKS = sorted(EXERCISE_DIR.glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def kernel():
    """One Jupyter kernel for every exercise notebook: each starts from an empty namespace (``%reset``)
    in its own folder, as in a fresh kernel, but torch is imported once instead of six times."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    client = nbclient.NotebookClient(nbformat.v4.new_notebook(), timeout=120, kernel_name="python3",
                                     allow_errors=True, resources={"metadata": {"path": str(EXERCISE_DIR)}})
    with client.setup_kernel():
        yield client


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_an_exercise_notebook_fails_only_at_its_todos(path, kernel):
    """Run the exercise as a student would, untouched: every error must be the TODO's
    NotImplementedError (in the TODO's check cell, or a later cell that uses the function)."""
    import nbformat

    kernel.nb = notebook = nbformat.read(path, as_version=4)
    fresh = nbformat.v4.new_code_cell(f"%reset -f\nimport os\nos.chdir({str(path.parent)!r})")
    kernel.execute_cell(fresh, 0, store_history=False)
    assert not fresh.outputs, fresh.outputs
    for index, cell in enumerate(notebook.cells):
        kernel.execute_cell(cell, index)
    errors = {i: o for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              for o in cell.outputs if o.output_type == "error"}
    for index, error in errors.items():
        assert error.ename == "NotImplementedError" and "TODO" in error.evalue, (
            f"cell {index} of {path.name} fails for another reason than a TODO: "
            f"{error.ename}: {error.evalue}")
    checks = [i for i, cell in enumerate(notebook.cells) if "check" in cell.metadata.get("tags", [])]
    todos = [i for i, cell in enumerate(notebook.cells) if "todo" in cell.metadata.get("tags", [])]
    assert checks and todos, "an exercise needs a TODO cell and a check cell (tags 'todo', 'check')"
    assert set(checks) <= set(errors), "every check cell must stop at the TODO"
    assert not set(todos) & set(errors), "defining the TODO function must not fail"
    assert min(errors) > min(todos), "cells before the first TODO (the context) must all run"


def test_the_teachers_page_lists_every_function_each_exercise_asks_for():
    rows = {}
    for line in (ROOT / "docs" / "teachers.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0].isdigit():
            rows[int(cells[0])] = sorted(re.findall(r"`(\w+)`", cells[1]))
    todo = re.compile(r"TODO: write (\w+)")
    asked = {int(path.name[:2]): sorted(set(todo.findall(path.read_text(encoding="utf-8"))))
             for path in EXERCISE_NOTEBOOKS}
    assert rows == asked
    assert sorted(name for names in asked.values() for name in names) == sorted(EXERCISES)


def test_the_exercise_notebooks_have_no_outputs_and_no_solutions():
    for path in EXERCISE_NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path.name
        for cell in json.loads(text)["cells"]:
            assert not cell.get("outputs"), f"{path.name} has stored outputs"


def test_any_floating_dtype_is_weighted_alike_and_half_precision_is_explained():
    from minirlhf.exercises import check_dpo_loss, check_sequence_logps

    def sequence_logps_float64(token_logps, response_mask):
        return (token_logps.double() * response_mask).sum(-1)

    assert check_sequence_logps(sequence_logps_float64, verbose=False)  # its gradient is checked too
    result = check_dpo_loss(lambda pc, pr, rc, rr, beta: torch.nn.functional.softplus(
        -beta * ((pc - rc) - (pr - rr))).bfloat16(), verbose=False, raise_on_failure=False)
    assert not result.passed
    assert "Your result is in torch.bfloat16" in result.report()


def test_small_inputs_are_shown_with_their_digits_not_as_zero():
    def no_epsilon(values, mask, shift_mean=True):
        real = values[mask.bool()]
        out = (values - real.mean()) / real.std(unbiased=False)
        return (out if shift_mean else out + real.mean()) * mask

    report = check_whiten(no_epsilon, verbose=False, raise_on_failure=False).report()
    assert "First failing case: advantages that barely differ" in report
    assert "values = [[0.0001, -0.0002, 5e-05, 0.0003], [0.0002, -0.0001, 0.0, 0.0]]" in report
