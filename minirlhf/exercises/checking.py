"""The machinery behind every exercise check: cases, known mistakes, and kind feedback.

A check runs the student's function and the library's on the same inputs: first hand-made
cases that each probe one idea ("the prompt's log-probs must not count"), then random ones.
When the two disagree, the check does not stop at "wrong". It runs a catalogue of the usual
wrong implementations (:class:`Mistake`) on the same cases; one that reproduces the student's
numbers on every case names what almost certainly happened, with the fix. A slip is only ever
named where it gives exactly the student's numbers: on every case (the likely cause), on most
failing cases (part of the cause), or on the failing case shown. When none does, the check
falls back to general clues: a flipped sign, a constant factor, a wrong shape, values where
the mask is 0, a gradient that does not flow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minirlhf.logprobs import last_token_index

try:  # optional: only a notebook shows a failed check in one line
    from IPython import get_ipython
except ImportError:  # pragma: no cover - IPython is installed with the notebooks' extras
    get_ipython = None

# Two results agree when |got - expected| <= ATOL + RTOL * |expected| (in float64).
RTOL = 1e-4
ATOL = 1e-5


class ExerciseCheckFailed(AssertionError):
    """Raised by a check when the student's function does not agree with the library's yet."""


class StillTodo(NotImplementedError):
    """Raised by a check when the student's function is still the ``TODO`` stub."""


def _concise_traceback(shell, etype, value, tb, tb_offset=None):
    """IPython handler for the two exceptions above: one line instead of a traceback through the
    checking code (the feedback, printed just before, says everything)."""
    shown = NotImplementedError if issubclass(etype, NotImplementedError) else etype
    shell._showtraceback(shown, value, [f"{shown.__name__}: {value}"])


def show_failures_in_one_line() -> None:
    """In a notebook (IPython), show a failed check as one line instead of a traceback through the
    checking code. Does nothing elsewhere. :func:`run_check` calls it before each check."""
    if get_ipython is None:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "set_custom_exc"):
        shell.set_custom_exc((ExerciseCheckFailed, StillTodo), _concise_traceback)


@dataclass
class Case:
    """One input on which the student's function must agree with the library's."""

    name: str
    """A short title, e.g. ``"prompt tokens present"``."""
    probes: str
    """What the case tests, in words; shown when it fails."""
    args: dict
    """The arguments, by the library's parameter names, in call order."""


@dataclass
class Mistake:
    """A common wrong implementation, with what it does wrong and how to fix it."""

    name: str
    """A short name, e.g. ``"sign flipped"``."""
    cause: str
    """What such code does, in words."""
    fix: str
    """How to put it right."""
    implementation: Callable
    """A function with the exercise's signature that makes exactly this mistake."""
    variants: tuple[Callable, ...] = ()
    """Other common ways of writing the same slip whose numbers differ on some case (another
    denominator, say); the slip is recognised when any one of them reproduces the student's."""

    @property
    def implementations(self) -> tuple[Callable, ...]:
        """Every way of writing this slip the check recognises: the implementation, then its variants."""
        return (self.implementation, *self.variants)


@dataclass
class Convention:
    """Another common, correct way of computing the same thing, which the check accepts too.

    Its numbers may differ from the library's at the edges (nearly equal inputs, say) or by a
    documented choice; :attr:`note` says where, and the report of a student who follows it shows it.
    """

    name: str
    """What the convention does, and who uses it, e.g. ``"epsilon added to the std (CleanRL)"``."""
    note: str
    """Where its numbers differ from the library's, and why both are right."""
    implementation: Callable
    """A function with the exercise's signature that follows the convention."""
    variants: tuple[Callable, ...] = ()
    """The same convention combined with the exercise's other accepted choices."""

    @property
    def implementations(self) -> tuple[Callable, ...]:
        return (self.implementation, *self.variants)


@dataclass
class Exercise:
    """Everything a check needs to know about one function to write."""

    function_name: str
    """The name the notebook gives the function, e.g. ``"sft_loss"``."""
    reference: Callable
    """The library's implementation."""
    reference_name: str
    """Where the library's implementation lives, e.g. ``"minirlhf.sft.sft_loss"``."""
    formula: str
    """The equation to compare with when no known mistake explains the difference."""
    make_cases: Callable[[], list[Case]]
    """Builds the cases (hand-made first, then random; seeded, so always the same)."""
    mistakes: list[Mistake]
    """The catalogue of common wrong implementations that the check recognises."""
    output_names: tuple[str, ...] = ("loss",)
    """Names of the outputs compared (a function may return more, e.g. a stats dict: ignored)."""
    grad_args: tuple[str, ...] = ()
    """Arguments through which the gradient must flow like the library's (losses)."""
    mask_arg: str | None = None
    """Argument holding a (B, T) mask, to spot values written where the mask is 0."""
    conventions: list[Convention] = field(default_factory=list)
    """Other correct conventions the check accepts (each must pass on every case on its own)."""
    points: int = 1
    """What the exercise is worth in an autograder (:mod:`minirlhf.exercises.autograde`): about one
    point per idea it asks the student to get right."""


@dataclass
class CaseResult:
    """How the student's function did on one case."""

    case: Case
    passed: bool
    expected: tuple | None = None
    got: tuple | None = None
    problem: str = ""
    """What is wrong on this case, in words (empty when it passed)."""
    kind: str = ""
    """What kind of failure: "crash", "value", "in place" or "gradient" (empty when it passed)."""


@dataclass
class CheckResult:
    """The outcome of a check; ``bool(result)`` is True when every case passed."""

    function_name: str
    passed: bool
    cases: list[CaseResult]
    mistake: Mistake | None = None
    """The known mistake that reproduces the student's results, if one does."""
    partial: tuple[Mistake, int, int] | None = None
    """When no known mistake explains every case: one that explains some of the failing ones,
    with (how many, out of how many)."""
    on_shown_case: list[Mistake] = field(default_factory=list)
    """When neither of the above: the known mistakes that give exactly the student's (wrong)
    value on the failing case the report shows."""
    hints: list[str] = field(default_factory=list)
    """General clues found when no known mistake matched (or in addition to it)."""
    checked_gradients: bool = False
    """Whether the gradients were compared too (for losses)."""
    convention: Convention | None = None
    """When the function agrees with another accepted convention rather than the library's."""

    def __bool__(self) -> bool:
        return self.passed

    @property
    def shown_case(self) -> CaseResult:
        """The failing case the report details: a crash first, then a wrong value (its numbers say
        the most), then anything else."""
        order = {"crash": 0, "value": 1, "in place": 2, "gradient": 3}
        return min(self.failed_cases, key=lambda c: order.get(c.kind, 4))

    @property
    def failed_cases(self) -> list[CaseResult]:
        """The cases on which the student's function disagrees with the library's."""
        return [c for c in self.cases if not c.passed]

    def report(self) -> str:
        """The feedback, as text for a student."""
        n = len(self.cases)
        if self.passed:
            grads = ", gradients included" if self.checked_gradients else ""
            if self.convention is not None:
                return (f"Well done: {self.function_name} is right on all {n} cases{grads}. It follows "
                        f"another common convention than the library's: {self.convention.name}.\n"
                        f"  Note: {self.convention.note}")
            return (f"Well done: {self.function_name} agrees with the library on all {n} cases "
                    f"(hand-made and random){grads}.")
        failed = self.failed_cases
        lines = [f"Not quite yet: {self.function_name} differs from the library on {len(failed)} of {n} "
                 "cases.", ""]
        for result in self.cases:
            mark = "ok  " if result.passed else "FAIL"
            lines.append(f"  [{mark}] {result.case.name}")
        first = self.shown_case
        lines += ["", f"First failing case: {first.case.name}", f"  It checks that {first.case.probes}"]
        lines += ["  " + line for line in _describe_args(first.case.args)]
        lines.append(f"  {first.problem}")
        if self.mistake is not None:
            lines += ["", f"This looks like a common slip: {self.mistake.name}.",
                      f"  What happens: {self.mistake.cause}", f"  How to fix it: {self.mistake.fix}"]
        elif self.partial is not None:
            mistake, k, n = self.partial
            lines += ["", f"Part of this looks like a common slip: {mistake.name} (it gives exactly your "
                      f"results on {k} of the {n} failing cases; something else differs too).",
                      f"  What happens: {mistake.cause}", f"  How to fix it: {mistake.fix}"]
        elif len(self.on_shown_case) == 1:
            mistake = self.on_shown_case[0]
            lines += ["", f"On this case your result is exactly what a common slip gives: {mistake.name} "
                      "(not on every case, so something else may differ too).",
                      f"  What happens: {mistake.cause}", f"  How to fix it: {mistake.fix}"]
        elif self.on_shown_case:
            names = "; ".join(m.name for m in self.on_shown_case)
            lines += ["", f"On this case your result is exactly what each of these common slips gives: "
                      f"{names} (none of them gives your numbers on every case, so look at what they "
                      "have in common)."]
        for hint in self.hints:
            lines += ["", f"Clue: {hint}"]
        lines += ["", "Fix it, run the cell that defines the function again, then this check."]
        return "\n".join(lines)

    def __repr__(self) -> str:
        status = "passed" if self.passed else "failed"
        name = f", mistake={self.mistake.name!r}" if self.mistake else ""
        return (f"CheckResult({self.function_name}: {status}, "
                f"{len(self.cases) - len(self.failed_cases)}/{len(self.cases)} cases{name})")


def run_check(exercise: Exercise, student_fn: Callable, verbose: bool = True,
              raise_on_failure: bool = True) -> CheckResult:
    """Compare ``student_fn`` with the library on every case of ``exercise`` and explain.

    Prints the feedback when ``verbose``; raises :class:`ExerciseCheckFailed` after it when the
    function is not right yet and ``raise_on_failure`` (so a notebook run stops there), and
    re-raises ``NotImplementedError`` when the function is still the TODO stub.
    """
    __tracebackhide__ = True  # IPython and pytest: hide this frame, the message is what matters
    show_failures_in_one_line()
    if not callable(student_fn):
        raise TypeError(f"Pass the function itself, e.g. check(...)({exercise.function_name}), "
                        f"not {type(student_fn).__name__}.")
    cases = exercise.make_cases()
    results = [_run_case(exercise, student_fn, case) for case in cases]
    result = CheckResult(exercise.function_name, all(r.passed for r in results), results,
                         checked_gradients=bool(exercise.grad_args))
    if not result.passed and all(r.kind in ("value", "gradient") for r in result.failed_cases):
        found = _find_convention(exercise, student_fn, cases)
        if found is not None:
            result.convention, result.cases, result.passed = *found, True
    if not result.passed:
        result.mistake = _find_mistake(exercise, results)
        if result.mistake is None:
            result.partial = _find_partial_mistake(exercise, results)
            if result.partial is None:
                result.on_shown_case = _mistakes_on_case(exercise, result.shown_case)
            result.hints = _general_hints(exercise, results)
    if verbose:
        print(result.report())
    if raise_on_failure and not result.passed:
        because = f" Likely cause: {result.mistake.name}." if result.mistake else ""
        raise ExerciseCheckFailed(
            f"{exercise.function_name} is not right yet ({len(result.failed_cases)} of "
            f"{len(results)} cases differ).{because} The feedback above says which and why.")
    return result


def _find_convention(exercise: Exercise, student_fn: Callable, cases: list[Case]):
    """The accepted convention whose implementation the student's function agrees with on every case
    (values, and gradients for a loss), with the cases' results against it; None if none does."""
    for convention in exercise.conventions:
        for implementation in convention.implementations:
            variant = dataclasses.replace(exercise, reference=implementation, conventions=[])
            results = [_run_case(variant, student_fn, case) for case in cases]
            if all(r.passed for r in results):
                return convention, results
    return None


# ---------------------------------------------------------------------------------------------
# Running one case


def _clone_args(args: dict, grad_args: tuple[str, ...] = ()) -> dict:
    """Fresh copies, so that no call sees what another did; ``grad_args`` require grad."""
    out = {}
    for name, value in args.items():
        if torch.is_tensor(value):
            value = value.detach().clone()
            if name in grad_args:
                value.requires_grad_(True)
        out[name] = value
    return out


def _call(fn: Callable, args: dict):
    """Call positionally, in the library's order: students may name their parameters freely."""
    return fn(*args.values())


def _outputs(exercise: Exercise, value) -> tuple:
    """The compared outputs of a call: a tensor, or the first items of a tuple."""
    n = len(exercise.output_names)
    if isinstance(value, (tuple, list)):
        return tuple(value[:n])
    return (value,)


def _as_tensor(value):
    if torch.is_tensor(value):
        return value
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    return None


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Same values (scalars may differ in shape: () and (1,) are both one number)."""
    if got.numel() != expected.numel():
        return False
    if got.shape != expected.shape and expected.numel() != 1:
        return False
    got, expected = got.detach().double().reshape(-1), expected.detach().double().reshape(-1)
    both_inf = torch.isinf(got) & torch.isinf(expected) & (torch.sign(got) == torch.sign(expected))
    close = (got - expected).abs() <= ATOL + RTOL * expected.abs()
    return bool((close | both_inf).all())


def _weighted_sum(out: torch.Tensor, seed: int) -> torch.Tensor:
    """A scalar whose gradient sees every element of ``out`` (fixed random weights).

    The weights are drawn in float32 whatever ``out``'s dtype, then converted (exactly): a
    student's float64 answer is weighted like the library's float32 one."""
    if out.numel() == 1:
        return out.sum()
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed))
    return (out * weights.to(out.dtype)).sum()


def _gradients(exercise: Exercise, fn: Callable, case: Case):
    """(outputs, {arg: grad}) of ``fn`` on ``case``; grads w.r.t. ``exercise.grad_args``."""
    args = _clone_args(case.args, exercise.grad_args)
    outputs = _outputs(exercise, _call(fn, args))
    first = outputs[0]
    grads = {}
    if exercise.grad_args and torch.is_tensor(first) and first.requires_grad:
        tensors = [args[name] for name in exercise.grad_args]
        found = torch.autograd.grad(_weighted_sum(first, seed=len(case.name)), tensors,
                                    allow_unused=True)
        grads = dict(zip(exercise.grad_args, found))
    return outputs, grads


def _run_case(exercise: Exercise, student_fn: Callable, case: Case) -> CaseResult:
    expected, expected_grads = _gradients(exercise, exercise.reference, case)
    args = _clone_args(case.args)
    try:
        got = _outputs(exercise, _call(student_fn, args))
    except NotImplementedError as error:
        raise StillTodo(
            f"{exercise.function_name} is still a TODO ({error}). Replace the `raise "
            "NotImplementedError` line with your code, run that cell, then run this check again."
        ) from None
    except Exception as error:  # noqa: BLE001 - the student's code crashed: say how, and on what
        return CaseResult(case, False, expected, None, _explain_exception(error, exercise, case), "crash")
    changed = [name for name, value in args.items()
               if torch.is_tensor(value) and not torch.equal(value, case.args[name])]
    if changed:
        return CaseResult(case, False, expected, got,
                          f"Your function changed its input {changed[0]!r} in place (an in-place "
                          "operation such as `x -= ...`, `x[...] = ...` or `x.mul_(...)`). Work on a "
                          "copy (`x = x.clone()`) or write `x = x - ...` instead: the caller still "
                          "needs the original.", "in place")
    problem = _compare_outputs(exercise, expected, got)
    if problem:
        return CaseResult(case, False, expected, got, problem, "value")
    problem = _compare_gradients(exercise, student_fn, case, expected_grads)
    return CaseResult(case, not problem, expected, got, problem, "gradient" if problem else "")


def _compare_outputs(exercise: Exercise, expected: tuple, got: tuple) -> str:
    """What differs between the outputs, in words ('' when they agree)."""
    if len(got) < len(expected):
        names = " and ".join(exercise.output_names)
        return f"Your function returned {len(got)} value(s); it should return {names}."
    for name, exp, value in zip(exercise.output_names, expected, got):
        tensor = _as_tensor(value)
        if value is None:
            return f"Your function returned None for {name}: is a `return` missing?"
        if tensor is None:
            return f"{name} should be a torch tensor, got a {type(value).__name__}."
        if tensor.numel() != exp.numel() or (tensor.shape != exp.shape and exp.numel() != 1):
            return (f"{name} has shape {tuple(tensor.shape)} but the library's has shape "
                    f"{tuple(exp.shape)}.{_shape_hint(tensor, exp)}")
        if not torch.isfinite(tensor).all() and torch.isfinite(exp).all():
            return (f"{name} contains inf or nan where the library's is finite: "
                    f"expected {_fmt(exp)}, got {_fmt(tensor)}.")
        if not _close(tensor, exp):
            return f"{name}: expected {_fmt(exp)}, got {_fmt(tensor)}.{_precision_hint(tensor)}"
    return ""


def _precision_hint(tensor: torch.Tensor) -> str:
    """Any floating dtype is fine (float32, float64), but a half-precision one keeps only 3 or 4
    significant digits, too few to agree with the library to 1e-4: say so."""
    if tensor.dtype not in (torch.float16, torch.bfloat16):
        return ""
    return (f" Your result is in {tensor.dtype}, which keeps only 3 to 4 significant digits: compute "
            "in float32 (the inputs' dtype) or float64.")


def _compare_gradients(exercise: Exercise, student_fn: Callable, case: Case, expected: dict) -> str:
    if not expected:
        return ""
    try:
        got_outputs, got = _gradients(exercise, student_fn, case)
    except Exception as error:  # noqa: BLE001 - e.g. changing in place an input that requires grad
        return _explain_exception(error, exercise, case)
    first = got_outputs[0]
    if not torch.is_tensor(first) or not first.requires_grad:
        return ("The value is right, but no gradient flows through it: the loss was cut off from "
                "the graph (by `.item()`, `.detach()`, `torch.tensor(...)`, `float(...)` or "
                "NumPy). Keep every step in torch operations on the input tensors.")
    for name, grad in expected.items():
        mine = got.get(name)
        if grad is None:
            continue
        if mine is None:
            return (f"The value is right, but the gradient does not reach {name!r}: part of the "
                    "computation was detached from it.")
        if not _close(mine, grad):
            return (f"The value is right on this case, but the gradient with respect to {name!r} differs "
                    f"(expected {_fmt(grad)}, got {_fmt(mine)}): the loss must also respond to its "
                    "inputs like the library's. Either the formula differs in a way these numbers hide "
                    "(a factor inside a function, at a point where it changes nothing), or part of it "
                    "is detached from the inputs.")
    return ""


def _shape_hint(got: torch.Tensor, expected: torch.Tensor) -> str:
    if expected.numel() == 1 and got.dim() >= 1:
        return (" The library returns one number: did you forget to reduce (sum or mean) over "
                "the batch or the tokens?")
    if got.numel() == 1 and expected.dim() >= 1:
        return (f" The library returns one value per row, shape {tuple(expected.shape)}: "
                "remove the final reduction (`.mean()` or `.sum()`).")
    return " Check which dimension you reduced over (dim=-1 is tokens, dim=0 is the batch)."


def _explain_exception(error: Exception, exercise: Exercise, case: Case) -> str:
    """The student's exception, and what usually causes it."""
    text = str(error).strip()
    message = f"Your function raised {type(error).__name__}: {text}"
    message += "" if message.endswith((".", "!", "?")) else "."
    call = f"{exercise.function_name}({', '.join(case.args)})"
    if "leaf Variable that requires grad" in text or "in-place operation" in text:
        message += (" This comes from changing an input in place; write `x = x - ...` "
                    "instead of `x -= ...`.")
    elif isinstance(error, TypeError) and "argument" in text:
        message += f" The check calls your function as {call}: keep these parameters, in this order."
    elif isinstance(error, IndexError) and "out of bounds" in text:
        message += (" An index runs past the end of a dimension: at the last column there is no "
                    "t + 1 (treat what comes after the last token as 0).")
    elif "size of tensor" in text or "shape" in text or "dimension" in text:
        message += (" Check the shapes: every input here is (B, T) (or (B,) for per-sequence "
                    "values), and broadcasting needs matching shapes.")
    elif "index" in text and exercise.mask_arg:
        message += f" Masks are 0/1 integers; to index with one, use `{exercise.mask_arg}.bool()`."
    return message


# ---------------------------------------------------------------------------------------------
# Diagnosis


def _implementation_outputs(exercise: Exercise, implementation: Callable, case: Case):
    """What a catalogued wrong implementation returns on ``case`` (None if it crashes there)."""
    try:
        with torch.no_grad():
            return _outputs(exercise, _call(implementation, _clone_args(case.args)))
    except Exception:  # noqa: BLE001 - a mistake that crashes on a case cannot be the student's
        return None


def _same_outputs(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None or len(a) < len(b):
        return False
    for x, y in zip(a, b):
        x, y = _as_tensor(x), _as_tensor(y)
        if x is None or y is None:
            return False
        x, y = x.detach(), y.detach()
        nan_match = torch.isnan(x).any() or torch.isnan(y).any()
        if nan_match and x.shape == y.shape and torch.equal(torch.isnan(x), torch.isnan(y)):
            x, y = torch.nan_to_num(x), torch.nan_to_num(y)
        if not _close(x, y):
            return False
    return True


def _reproduces(exercise: Exercise, implementation: Callable, results: list[CaseResult]) -> bool:
    """Whether ``implementation`` gives exactly the student's outputs on every one of ``results``."""
    return all(_same_outputs(_implementation_outputs(exercise, implementation, r.case), r.got)
               for r in results)


def _find_mistake(exercise: Exercise, results: list[CaseResult]) -> Mistake | None:
    """The catalogued mistake that reproduces the student's outputs on every case, if any.

    A student's outputs that crashed on some case cannot be fingerprinted there; those cases are
    skipped, but at least one compared case must have failed.
    """
    compared = [r for r in results if r.got is not None]
    if not any(not r.passed for r in compared):
        return None
    for mistake in exercise.mistakes:
        if any(_reproduces(exercise, implementation, compared) for implementation in mistake.implementations):
            return mistake
    return None


def _find_partial_mistake(exercise: Exercise, results: list[CaseResult]):
    """A catalogued mistake that reproduces the student's outputs on at least half of the failing
    cases (two slips at once, say) and agrees with the library wherever the student does.
    Returns (mistake, cases explained, failing cases) or None."""
    failing = [r for r in results if not r.passed and r.got is not None and r.kind == "value"]
    passing = [r for r in results if r.passed]
    best = None
    for mistake in exercise.mistakes:
        for implementation in mistake.implementations:
            outputs = {id(r): _implementation_outputs(exercise, implementation, r.case)
                       for r in failing + passing}
            if not all(_same_outputs(outputs[id(r)], r.expected) for r in passing):
                continue
            explained = sum(_same_outputs(outputs[id(r)], r.got) for r in failing)
            if explained and 2 * explained >= len(failing) and (best is None or explained > best[1]):
                best = (mistake, explained, len(failing))
    return best


def _mistakes_on_case(exercise: Exercise, result: CaseResult) -> list[Mistake]:
    """The catalogued mistakes that give exactly the student's wrong value on this one case. Only
    for a wrong value: a crash, an input changed in place or a gradient has its own message."""
    if result.kind != "value":
        return []
    return [mistake for mistake in exercise.mistakes
            if any(_reproduces(exercise, implementation, [result])
                   for implementation in mistake.implementations)]


def _general_hints(exercise: Exercise, results: list[CaseResult]) -> list[str]:
    """Clues for a mistake that is not in the catalogue."""
    failed = [r for r in results if not r.passed and r.got is not None and r.expected is not None]
    if len(exercise.output_names) == 2 and failed and all(
            _same_outputs(tuple(reversed(r.got[:2])), r.expected) for r in failed):
        first, second = exercise.output_names
        return [f"Your two results are the library's in the other order: return ({first}, {second})."]
    pairs = []
    for r in failed:
        got, exp = _as_tensor(r.got[0]), r.expected[0]
        if got is not None and got.numel() == exp.numel() and not _close(got, exp):
            pairs.append((r, got.detach().double().reshape(exp.shape), exp.detach().double()))
    if not pairs:  # only crashes, shapes or gradients: the case's own message says it all
        return [] if failed else [f"Compare your code with the formula: {exercise.formula}"]
    hints = []
    if all(_close(got, -exp) for _, got, exp in pairs):
        hints.append("On every failing case your result is exactly minus the library's: a sign is "
                     "flipped (a missing minus, or two terms subtracted the wrong way round).")
    else:
        ratios = [(got / exp)[exp.abs() > 1e-6] for _, got, exp in pairs]
        ratios = torch.cat([r.reshape(-1) for r in ratios]) if ratios else torch.tensor([])
        if len(ratios) and torch.isfinite(ratios).all() and (ratios - ratios[0]).abs().max() < 1e-4 \
                and not math.isclose(ratios[0].item(), 1.0, rel_tol=1e-4):
            hints.append(f"Your result is the library's times {ratios[0].item():.4g} on every failing "
                         "case: a constant factor is wrong (a sum instead of a mean, a count, a "
                         "coefficient applied twice or not at all).")
    if exercise.mask_arg and not hints:
        outside = []
        for r, got, exp in pairs:
            mask = r.case.args[exercise.mask_arg].bool()
            if got.shape == mask.shape:
                outside.append(_close(got[mask], exp[mask]) and not _close(got[~mask], exp[~mask]))
        if outside and all(outside):
            hints.append(f"Your values are right where {exercise.mask_arg} is 1 and wrong where it "
                         "is 0 (prompt and padding): multiply by the mask so those positions are 0.")
    if not torch.isfinite(torch.cat([got.reshape(-1) for _, got, _ in pairs])).all():
        hints.append("Some results are inf or nan: a log of a probability that underflowed to 0, "
                     "or a division by zero. Use torch.nn.functional.logsigmoid rather than "
                     "log(sigmoid(x)), and divide by counts that cannot be 0.")
    hints.append(f"Compare your code with the formula: {exercise.formula}")
    return hints


# ---------------------------------------------------------------------------------------------
# Formatting


def _fmt(value) -> str:
    tensor = _as_tensor(value)
    if tensor is None:
        return repr(value)
    tensor = tensor.detach().double()
    if tensor.numel() == 1:
        return f"{tensor.item():.6g}"
    if tensor.numel() <= 16:
        return str([_short(x, 4) for x in tensor.reshape(-1).tolist()]) + \
            ("" if tensor.dim() == 1 else f" (shape {tuple(tensor.shape)}, flattened)")
    return f"a tensor of shape {tuple(tensor.shape)}"


def _describe_args(args: dict) -> list[str]:
    lines = []
    for name, value in args.items():
        if torch.is_tensor(value) and value.numel() <= 16:
            rows = value.tolist() if value.dim() else value.item()
            lines.append(f"{name} = {_round(rows)}")
        elif torch.is_tensor(value):
            lines.append(f"{name}: tensor of shape {tuple(value.shape)}")
        else:
            lines.append(f"{name} = {value!r}")
    return lines


def _round(x):
    if isinstance(x, list):
        return [_round(v) for v in x]
    return _short(x, 3) if isinstance(x, float) else x


def _short(x: float, decimals: int) -> float:
    """``x`` rounded for display; a small number that would round to 0 keeps 3 significant
    digits instead (an input of 1e-4 must not read 0.0)."""
    rounded = round(x, decimals)
    if rounded == 0 and x != 0 and math.isfinite(x):
        rounded = float(f"{x:.3g}")
    return rounded + 0.0  # + 0.0: no "-0.0"


# ---------------------------------------------------------------------------------------------
# Masks as the catalogued wrong implementations get them wrong (shared by several exercises)


def without_eos(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` with each row's last response token (the EOS) set to 0: the EOS left out."""
    mask = mask.clone()
    mask[torch.arange(mask.shape[0]), last_token_index(mask)] = 0
    return mask


def shifted(mask: torch.Tensor, by: int) -> torch.Tensor:
    """``mask`` moved one column (``by`` = -1: to the left, +1: to the right), zeros coming in.
    ``logprobs * shifted(mask, -1)`` scores, for each response token, the token before it:
    what ``logprobs[:, :-1] * mask[:, 1:]`` does."""
    out = torch.zeros_like(mask)
    if by < 0:
        out[:, :by] = mask[:, -by:]
    else:
        out[:, by:] = mask[:, :-by]
    return out


# ---------------------------------------------------------------------------------------------
# Random inputs


def random_layout(batch: int, prompt_len: int, max_response: int, generator: torch.Generator):
    """A random (B, T) response mask in the library's layout: prompt first, then a response of
    1..``max_response`` tokens, then right padding. Returns a long tensor, like
    :func:`minirlhf.logprobs.encode_prompt_response`."""
    lengths = torch.randint(1, max_response + 1, (batch,), generator=generator)
    lengths[0] = max_response  # the longest response sets the width, as in a real batch
    positions = torch.arange(max_response)
    response = (positions[None, :] < lengths[:, None]).long()
    return torch.cat([torch.zeros(batch, prompt_len, dtype=torch.long), response], dim=1)


def random_logprobs(shape: tuple[int, ...], generator: torch.Generator, scale: float = 2.0):
    """Random log-probabilities (all < 0), like a small model's per-token log-probs."""
    return -scale * torch.rand(shape, generator=generator) - 0.01
