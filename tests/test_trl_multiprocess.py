"""The TRL examples on several processes: the commands of docs/where_next.md, two processes on the CPU
(gloo), in short runs, against one process at the same settings; and the runs that must fail loudly.

The short settings and the tolerance come from ``benchmarks/results/trl_multiprocess.json``
(``benchmarks/trl_multiprocess.py`` measured the two launches over several seeds at these settings): DPO
trains on the same batches with one process or two, so they differ by rounding; GRPO's processes draw
their own answers, so they differ as two seeds do."""

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minirlhf.dpo import DPOConfig
from minirlhf.grpo import GRPOConfig
from minirlhf.integrations.trl import (ExactEvaluationCallback, dpo_args, grpo_args, per_device_batch,
                                       world_size)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = json.loads((ROOT / "benchmarks" / "results" / "trl_multiprocess.json").read_text())
PAGE = (ROOT / "docs" / "where_next.md").read_text(encoding="utf-8")
FINAL = re.compile(r"^TRL \w+Trainer, .*?(\d+) process\(es\), (\d+) optimizer steps: exact attainment "
                   r"(-?[\d.]+)", re.M)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc_command(launcher: str, script: str) -> list[str]:
    """The one command of where_next.md that starts with ``launcher`` and runs ``script``."""
    lines = [line for block in re.findall(r"```bash\n(.*?)```", PAGE, re.S) for line in block.splitlines()]
    (words,) = [shlex.split(line) for line in lines
                if line.startswith(launcher) and script in line and "--model" not in line]
    return words


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def threads():
    """The examples set torch's threads (--threads): give the test session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


LAUNCHERS = {"torchrun": [sys.executable, "-m", "torch.distributed.run"],
             "accelerate": [sys.executable, "-m", "accelerate.commands.launch"]}
"""The launchers' console scripts, run as the modules they are with this interpreter (whatever PATH has)."""


def _two_processes_against_one(words: list[str], example: str, tmp_path) -> None:
    """Run the documented command ``words`` (2 processes) and the example in this process (1), at the
    short settings of the benchmark, and compare their final lines."""
    pytest.importorskip("trl")
    settings = RESULTS[f"{example}_short"]
    words = LAUNCHERS[words[0]] + words[2 if words[:2] == ["accelerate", "launch"] else 1:]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(words + settings["arguments"] + ["--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    finals = FINAL.findall(done.stdout)
    assert len(finals) == 1, done.stdout[-3000:]  # printed once, by the main process
    processes, steps, attainment = int(finals[0][0]), int(finals[0][1]), float(finals[0][2])
    one = _example(f"trl_{example}").main(settings["arguments"] + ["--out", str(tmp_path / "one")])
    assert processes == 2 and steps == one["step"] > 0
    assert abs(attainment - one["exact/attainment"]) <= settings["tolerance"], (attainment, one)


def test_dpo_on_two_processes_under_torchrun_trains_as_one_process(tmp_path, threads):
    words = _doc_command("torchrun", "examples/trl_dpo.py")
    assert words[:3] == ["torchrun", "--nproc_per_node", "2"]
    # --master_port: a free port, so that runs beside this one (other tests, other users) do not collide
    _two_processes_against_one(words[:1] + ["--master_port", str(_free_port())] + words[1:], "dpo", tmp_path)


def test_grpo_on_two_processes_under_accelerate_launch_trains_as_one_process(tmp_path, threads):
    words = _doc_command("accelerate launch", "examples/trl_grpo.py")
    config = words[words.index("--config_file") + 1]
    assert "num_processes: 2" in (ROOT / config).read_text()
    _two_processes_against_one(words[:2] + ["--main_process_port", str(_free_port())] + words[2:], "grpo",
                               tmp_path)


# --- the global batch, and the runs that must not go on ------------------------------------------


def test_the_global_batch_is_per_device_batch_x_processes_x_accumulation():
    assert per_device_batch(32, 2, 1) == 16 and per_device_batch(32, 2, 4) == 4
    with pytest.raises(ValueError, match=r"over 3 processes .* Run 1, 2, 4, 8, 16, 32 processes"):
        per_device_batch(32, 3)
    single, double = dpo_args(DPOConfig()), dpo_args(DPOConfig(), processes=2, accumulation=2)
    assert double["per_device_train_batch_size"] * 2 * double["gradient_accumulation_steps"] \
        == single["per_device_train_batch_size"] == DPOConfig().batch_size
    config = GRPOConfig(kl="loss")
    for processes, accumulation in ((1, 1), (2, 1), (2, 2), (4, 1)):
        args = grpo_args(config, processes, accumulation)
        # the answers sampled at once (TRL's generation batch) and the optimizer steps stay the same
        assert args["per_device_train_batch_size"] * processes * args["steps_per_generation"] \
            == config.prompts_per_step * config.group_size
        assert args["steps_per_generation"] // args["gradient_accumulation_steps"] == config.minibatches
        assert args["max_steps"] == grpo_args(config)["max_steps"]


def test_world_size_is_what_the_launcher_says(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world_size() == 4


@pytest.mark.parametrize("example", ["trl_dpo", "trl_grpo"])
def test_a_world_size_that_does_not_divide_the_batch_exits_with_the_fix(example, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")  # refused before any process group is started
    with pytest.raises(SystemExit) as exit_:
        _example(example).main([])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "does not split evenly over 3 processes" in error and "Run 1, 2, 4" in error


def test_accelerate_cpu_with_several_processes_is_refused_not_run_as_one(monkeypatch):
    """``accelerate launch --cpu --num_processes 2`` starts one process, with this environment (what
    accelerate 1.16's simple launcher sets)."""
    for name in ("WORLD_SIZE", "RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(SystemExit, match="started one process.*examples/accelerate_cpu.yaml"):
        _example("trl_dpo").main([])


def test_more_prompts_per_step_than_prompts_exits_with_the_fix(capsys):
    with pytest.raises(SystemExit) as exit_:
        _example("trl_grpo").main(["--prompts-per-step", "32"])
    assert exit_.value.code == 2 and "more than the 20 training prompts" in capsys.readouterr().err


def test_a_run_of_zero_optimizer_steps_fails_with_the_cause(tmp_path):
    """TRL samples generation_batch_size / num_generations distinct prompts at once; with more than the
    data hold, transformers finds no batch, trains nothing and would exit 0: the callback refuses."""
    trl = pytest.importorskip("trl")
    from minirlhf.export import prompt_data
    from minirlhf.integrations.trl import load_policy, run_args, true_reward_func

    policy, ref_model, tokenizer = load_policy()
    config = GRPOConfig(kl="loss", steps=1, epochs=1, minibatches=1, prompts_per_step=8)
    trainer = trl.GRPOTrainer(
        model=policy, reward_funcs=true_reward_func, processing_class=tokenizer,
        train_dataset=prompt_data("train").select(range(4)),
        args=trl.GRPOConfig(output_dir=str(tmp_path), **grpo_args(config), **run_args()))
    ExactEvaluationCallback(ref_model, tokenizer, config.beta, every=0, held_out=False).attach(trainer)
    with pytest.raises(RuntimeError, match=r"0 optimizer steps.*from 4 rows.*Fix:"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_the_example_scripts_say_how_to_launch_them():
    for example in ("trl_dpo", "trl_grpo"):
        doc = _example(example).__doc__
        assert f"torchrun --nproc_per_node 2 examples/{example}.py" in doc
        assert f"accelerate launch --config_file examples/accelerate_cpu.yaml examples/{example}.py" in doc
