"""The exercises in Otter-Grader's format, graded by minirlhf's own checks.

``minirlhf exercises export --format otter DIR`` (or :func:`export_otter`) turns every solution
notebook into an *Otter Assign* master notebook and, when Otter-Grader is installed (the
``classroom`` extra), runs ``otter assign`` on it::

    DIR/
      README.md                 what is where, and how to grade
      master/NN_name.ipynb      the Otter Assign source (solutions, tests, points): edit, re-assign
      NN_name/student/          the notebook to hand out (TODOs, Otter's check cells)
      NN_name/autograder/       the solutions notebook and NN_name-autograder_*.zip (Gradescope,
                                ``otter run``, ``otter grade``)

Each function a student writes is one Otter *question*, worth :attr:`Exercise.points
<minirlhf.exercises.checking.Exercise.points>`; the capstone (:mod:`minirlhf.exercises.capstone`),
when the checkout has it, is one more assignment whose question has a test case per part of its
grade. An exercise's test is Otter's exception-based format, one call
of :func:`assert_check_passes`: minirlhf's check is the test engine, so a failing test shows the
check's whole report (the failing case, its numbers, the slip it looks like and its fix), in
``grader.check(...)`` for the student and in the grader's feedback alike.

Why Otter rather than nbgrader: Otter's autograder is one zip that Gradescope, Canvas (through
``otter grade``) or a plain ``otter run`` on a laptop accepts, with no course database or
JupyterHub to set up; its exception-based tests pass the assertion's message through to the
student verbatim, which is where minirlhf's feedback lives; and students can run the same tests
before submitting. nbgrader needs a course directory, a gradebook and (for collecting) a
JupyterHub, and shows a failed test as a traceback in a feedback file released after grading.

The notebook's own check cells give way to Otter's (``grader.check("sft_loss")``, the same check).
Grading skips the "use it" cells after the last question (tag ``otter_ignore``), which train small
models for up to a minute and score nothing.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from minirlhf.exercises import EXERCISES, capstone
from minirlhf.exercises.checking import run_check
from minirlhf.exercises.notebooks import (
    BEGIN_CODE,
    DEF_LINE,
    END_CODE,
    MARKDOWN_SOLUTION,
    cell_source,
    dumps,
    find_solutions_dir,
    read_notebook,
    solution_functions,
    todo_stub,
)

FORMATS = ("otter",)
IGNORE_TAG = "otter_ignore"
"""Cells with this tag are skipped when Otter grades a submission."""
OTTER_REQUIREMENT = "otter-grader>=7,<8"
"""The Otter-Grader versions this export is tested with (the ``classroom`` extra)."""


def assert_check_passes(function_name: str, student_fn) -> None:
    """Otter's test of one exercise: raise ``AssertionError`` with minirlhf's feedback unless
    ``student_fn`` passes the check of ``function_name`` (a key of
    ``minirlhf.exercises.EXERCISES``). A missing function or the TODO stub fails with a sentence
    that says so."""
    exercise = EXERCISES[function_name]
    if student_fn is None:
        raise AssertionError(f"No function named {function_name} was defined: run the cell that "
                             f"defines it (keep its name, {function_name}).")
    try:
        result = run_check(exercise, student_fn, verbose=False, raise_on_failure=False)
    except NotImplementedError as error:
        raise AssertionError(str(error)) from None
    if not result.passed:
        raise AssertionError("\n" + result.report())


# ---------------------------------------------------------------------------------------------
# The Otter Assign master notebook


def _raw(source: str) -> dict:
    return {"cell_type": "raw", "metadata": {}, "source": source.splitlines(keepends=True)}


def _code(source: str, tags: list[str] | None = None) -> dict:
    metadata = {"tags": tags} if tags else {}
    return {"cell_type": "code", "execution_count": None, "metadata": metadata, "outputs": [],
            "source": source.splitlines(keepends=True)}


def _with_ids(notebook: dict) -> dict:
    """Give every cell an id (nbformat 4.5), so that no tool has to invent one."""
    notebook["nbformat"], notebook["nbformat_minor"] = 4, max(5, notebook.get("nbformat_minor", 0))
    for index, cell in enumerate(notebook["cells"]):
        cell.setdefault("id", f"cell-{index}")
    return notebook


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def otter_solution_source(source: str) -> str:
    """A solution cell in Otter's markers: the solution between ``# BEGIN SOLUTION NO PROMPT`` and
    ``# END SOLUTION``, followed by the student's TODO stub inside Otter's prompt block (a string
    in the solution, the code in the student's notebook)."""
    out, function, indent = [], "this function", ""
    for line in source.splitlines(keepends=True):
        match = DEF_LINE.match(line)
        if match:
            function = match.group(1)
        stripped = line.strip()
        if stripped == BEGIN_CODE:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# BEGIN SOLUTION NO PROMPT\n")
        elif stripped == END_CODE:
            out.append(f"{indent}# END SOLUTION\n")
            out.append(f'{indent}""" # BEGIN PROMPT\n')
            out.extend(todo_stub(indent, function))
            out.append(f'{indent}""" # END PROMPT\n')
        else:
            out.append(line)
    return "".join(out).rstrip("\n")


def test_cell(function_name: str) -> dict:
    """Otter's exception-based test of one exercise: a function of the student's function (Otter
    passes it in by name) and a call, as Otter Assign wants a test cell."""
    exercise = EXERCISES[function_name]
    failure = (f"{function_name} does not agree with {exercise.reference_name} yet: the report below "
               "says which case differs and why.")
    return _code(
        '""" # BEGIN TEST CONFIG\n'
        f"points: {exercise.points}\n"
        f"failure_message: {_yaml_string(failure)}\n"
        '""" # END TEST CONFIG\n'
        f"def test_{function_name}({function_name}):\n"
        "    from minirlhf.exercises.autograde import assert_check_passes\n"
        f"    assert_check_passes({function_name!r}, {function_name})\n\n"
        f"test_{function_name}({function_name})")


CAPSTONE_FUNCTION = "train_ppo_loop"
"""The capstone's question (:mod:`minirlhf.exercises.capstone`): several test cases, one per part."""


def question_points(function_name: str) -> float:
    """What a question is worth: its exercise's points, or the capstone's 10."""
    if function_name == CAPSTONE_FUNCTION:
        return capstone.ATTAINMENT_POINTS + sum(points for _, points in capstone.PROBES.values())
    return EXERCISES[function_name].points


def capstone_test_cells() -> list[dict]:
    """The capstone's test cases: one per hidden seed that must reach the bar, one per piece's check,
    each reading its part of one grade of the student's loop (:func:`~minirlhf.exercises.capstone.graded`)."""
    seeds = len(capstone.HIDDEN_SEEDS)
    parts = [(f"seed {i}", capstone.ATTAINMENT_POINTS / seeds, f"hidden seed {i + 1} reaches the bar")
             for i in range(seeds)]
    parts += [(name, points, title) for name, (title, points) in capstone.PROBES.items()]
    cells = []
    for part, points, title in parts:
        slug = part.replace(" ", "_")
        cells.append(_code(
            '""" # BEGIN TEST CONFIG\n'
            f"points: {points:g}\n"
            f"failure_message: {_yaml_string(f'Not yet: {title}. The report below says why.')}\n"
            '""" # END TEST CONFIG\n'
            f"def test_{CAPSTONE_FUNCTION}_{slug}({CAPSTONE_FUNCTION}):\n"
            "    from minirlhf.exercises.capstone import assert_part\n"
            f"    assert_part({part!r}, {CAPSTONE_FUNCTION})\n\n"
            f"test_{CAPSTONE_FUNCTION}_{slug}({CAPSTONE_FUNCTION})"))
    return cells


def assignment_config(name: str) -> dict:
    """Otter Assign's configuration cell for the assignment ``name``."""
    return _raw(
        "# ASSIGNMENT CONFIG\n"
        f"name: {name}\n"
        "init_cell: true\n"
        "check_all_cell: true\n"
        "export_cell:\n"
        "  pdf: false\n"
        "run_tests: false\n"
        "generate:\n"
        "  pdf: false\n"
        "tests:\n"
        "  ok_format: false\n"
        "  files: false\n")


def otter_master(solution: dict, name: str) -> dict:
    """The Otter Assign master notebook of one exercise (or the capstone), from its solution
    notebook: every function with a solution block becomes a question (its points from
    :func:`question_points`), its test one call of :func:`assert_check_passes` (the capstone's: one
    test case per part of its grade); the exercises' own check cells give way to Otter's; the cells
    after the last question are skipped by the grader; solution notes in markdown are left out."""
    cells = copy.deepcopy(solution["cells"])
    questions = [i for i, cell in enumerate(cells)
                 if cell["cell_type"] == "code" and solution_functions(cell_source(cell))]
    if not questions:
        raise ValueError(f"{name} has no solution block ({BEGIN_CODE!r}) in a code cell.")
    out = [assignment_config(name)]
    for index, cell in enumerate(cells):
        source = cell_source(cell)
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "markdown":
            source = MARKDOWN_SOLUTION.sub("", source).strip("\n")
            if source:
                out.append({"cell_type": "markdown", "metadata": {},
                            "source": source.splitlines(keepends=True)})
        elif cell["cell_type"] != "code":
            out.append(cell)
        elif index in questions:
            functions = solution_functions(source)
            if len(functions) != 1:
                raise ValueError(f"{name}: a cell with a solution must define one function, found "
                                 f"{functions or 'none'}.")
            function = functions[0]
            if function not in EXERCISES and function != CAPSTONE_FUNCTION:
                raise ValueError(f"{name}: {function} has no check in minirlhf.exercises.EXERCISES.")
            tests = capstone_test_cells() if function == CAPSTONE_FUNCTION else [test_cell(function)]
            out += [_raw(f"# BEGIN QUESTION\nname: {function}\npoints: {question_points(function):g}"),
                    _raw("# BEGIN SOLUTION"), _code(otter_solution_source(source)), _raw("# END SOLUTION"),
                    _raw("# BEGIN TESTS"), *tests, _raw("# END TESTS"), _raw("# END QUESTION")]
        else:
            capstone = any(f == CAPSTONE_FUNCTION for i in questions
                           for f in solution_functions(cell_source(cells[i])))
            if "check" in tags and not capstone:
                continue  # Otter's own check cell, grader.check(...), runs the same check
            skip = index > questions[-1] or "check" in tags  # the capstone's quick check: not graded
            out.append(_code(source, tags + ([IGNORE_TAG] if skip else [])))
    notebook = {key: value for key, value in solution.items() if key != "cells"}
    notebook["metadata"] = {k: v for k, v in solution.get("metadata", {}).items() if k != "widgets"}
    notebook["cells"] = [{key: value for key, value in cell.items() if key != "id"} for cell in out]
    return _with_ids(notebook)


# ---------------------------------------------------------------------------------------------
# The export


README = """# minirlhf's exercises for Otter-Grader

Made by `minirlhf exercises export --format otter` from the solution notebooks of minirlhf
(notebooks/exercises/solutions). Each exercise is one Otter assignment; each function the student
writes is one question, graded by minirlhf's own check (the test shows its whole report: the
failing case, the slip it looks like, the fix).

| exercise | questions (points) |
|---|---|
{table}

* `master/NN_name.ipynb`: the Otter Assign source (solutions, tests, points). Edit it and run
  `otter assign master/NN_name.ipynb NN_name` again to change the points or the wording.
* `NN_name/student/NN_name.ipynb`: hand this out. `grader.check("sft_loss")` runs a question's test.
* `NN_name/autograder/`: the solutions and `NN_name-autograder_*.zip`, the autograder.

Grading, without Docker, one submission at a time (the Python environment needs minirlhf and
otter-grader: `pip install "minirlhf[classroom]"` from a checkout):

    otter run -a NN_name/autograder/NN_name-autograder_*.zip -o results/ submission.ipynb

`otter grade` grades a folder of submissions in Docker; on Gradescope, upload the zip as the
autograder. Both build their image from the zip's requirements.txt, which does not name minirlhf:
add a line that installs it (a git URL of the repository, or a wheel added with `files:` in the
assignment config) before running `otter assign` again.

The capstone, `ppo_training_loop`, trains the student's loop for 150 PPO steps on each of three
hidden seeds (about a minute each on two cores): its test cases are one per seed that reaches the
bar and one per piece of the loop checked. `MINIRLHF_CAPSTONE_SEEDS=5,6,7` in the grading
environment picks other hidden seeds (three of them).
"""


def export_otter(out: str | Path, solutions: str | Path | None = None, assign: bool = True) -> list[Path]:
    """Write every exercise in Otter-Grader's format into ``out`` (new, or an earlier export's).

    ``solutions``: the folder of solution notebooks (default: the checkout's). ``assign``: run
    ``otter assign`` on each master notebook (needs ``otter-grader``, the ``classroom`` extra);
    without it only ``master/`` and the README are written. Returns the paths written at the top.
    """
    out = Path(out)
    source = find_solutions_dir(solutions)
    paths = sorted(source.glob("[0-9]*.ipynb"))
    capstone = source.parent.parent / "capstone" / "solutions"
    if solutions is None and capstone.is_dir():
        paths += sorted(capstone.glob("*.ipynb"))
    if assign:
        check_otter_installed()
    (out / "master").mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for path in paths:
        name = path.stem
        master = otter_master(read_notebook(path), name)
        target = out / "master" / path.name
        target.write_text(dumps(master), encoding="utf-8")
        functions = [q for cell in master["cells"] if cell["cell_type"] == "code"
                     for q in solution_functions_in_otter(cell_source(cell))]
        rows.append(f"| {name} | " + ", ".join(f"`{f}` ({question_points(f):g})" for f in functions) + " |")
        written.append(target)
        if assign:
            destination = out / name
            if destination.exists():
                shutil.rmtree(destination)
            run_otter_assign(target, destination)
            written.append(destination)
    readme = out / "README.md"
    readme.write_text(README.format(table="\n".join(rows)), encoding="utf-8")
    return [readme, *written]


def solution_functions_in_otter(source: str) -> list[str]:
    """The functions with an Otter solution block in ``source``."""
    names, function = [], None
    for line in source.splitlines():
        match = DEF_LINE.match(line)
        if match:
            function = match.group(1)
        if line.strip() == "# BEGIN SOLUTION NO PROMPT" and function is not None:
            names.append(function)
    return names


def check_otter_installed() -> None:
    """Raise ``ModuleNotFoundError`` naming the fix when Otter-Grader is missing."""
    try:
        import otter  # noqa: F401
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "Otter-Grader is not installed: pip install -e \".[classroom]\" (or pip install "
            f"\"{OTTER_REQUIREMENT}\"), or pass --no-assign to write only the master notebooks.") from None


def run_otter_assign(master: Path, destination: Path) -> None:
    """``otter assign master destination`` (without PDFs), in this process."""
    from otter.assign import main as otter_assign

    otter_assign(str(master.resolve()), str(destination.resolve()), no_pdfs=True)


def add_command(commands) -> None:
    """Add ``minirlhf exercises export --format otter DIR`` to the CLI's subcommands."""
    parser = commands.add_parser("exercises", help="the exercises in an autograder's format (Otter-Grader)")
    actions = parser.add_subparsers(dest="exercises_command", required=True)
    export = actions.add_parser("export", help="write every exercise as an Otter-Grader assignment "
                                "(master notebook, student notebook, autograder zip)")
    export.add_argument("out", type=Path, help="output folder (new, empty, or an earlier export's)")
    export.add_argument("--format", choices=FORMATS, default="otter", dest="fmt",
                        help="the autograder's format (default: otter)")
    export.add_argument("--solutions", type=Path, default=None,
                        help="folder of solution notebooks (default: the checkout's "
                             "notebooks/exercises/solutions)")
    export.add_argument("--no-assign", action="store_true",
                        help="write only the Otter Assign master notebooks (Otter-Grader not needed)")


def run_command(args, parser) -> int:
    """Carry out ``minirlhf exercises ...`` as parsed by :func:`add_command`."""
    try:
        check_export_target(args.out)
        find_solutions_dir(args.solutions)
        if not args.no_assign:
            check_otter_installed()
    except (ValueError, OSError, ModuleNotFoundError) as error:
        parser.error(str(error))
    for path in export_otter(args.out, args.solutions, assign=not args.no_assign):
        print(path)
    return 0


def check_export_target(out: str | Path) -> None:
    """Refuse a target that is a file, or a non-empty folder that is not an earlier export."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the export.")
    if out.is_dir() and any(out.iterdir()) and not (out / "master").is_dir():
        raise ValueError(f"{out} is not empty and holds no earlier export (no master/ folder): give a "
                         "new or empty folder, so that nothing of yours is overwritten.")
