"""KTO's learning rate on the world (docs/defaults.md#kto): KTO at beta 0.1 from one thumbs label per
answer (128 answers per training prompt, rater seed 0), 4 epochs, at several peak learning rates;
and SimPO with DPOConfig's defaults. Prints the exact attainment and the mass off the candidate set.

    nice -n 5 python benchmarks/kto_learning_rate.py > benchmarks/results/kto_learning_rate.log
"""
import copy

import torch

from minirlhf import world
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.kto import KTOConfig, train_kto, unpaired_feedback
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import ExactEvaluator
from minirlhf.preferences import default_preferences

torch.set_num_threads(1)
ref, tok = load_base_model()
ev = ExactEvaluator(ref, tok, world.prompts("train"))
data = unpaired_feedback(ref, tok, world.prompts("train"), 128, world.SimulatedRater(seed=0))
for lr in (1e-5, 3e-5, 1e-4, 3e-4):
    pol = copy.deepcopy(ref)
    train_kto(pol, ref, tok, data, KTOConfig(learning_rate=lr, progress=False))
    r = ev.evaluate(pol, 0.1)
    print("kto learning_rate", lr, "attainment", round(r["attainment"], 3), "leak", round(1 - r["coverage"], 3),
          flush=True)
pairs = default_preferences(progress=False)["train"]
pol = copy.deepcopy(ref)
train_dpo(pol, ref, tok, pairs, DPOConfig(loss_type="simpo", progress=False))
r = ev.evaluate(pol, 0.1)
print("simpo (rpo_alpha 1)", "attainment", round(r["attainment"], 3), "leak", round(1 - r["coverage"], 3))
