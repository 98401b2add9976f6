"""The tiny GPT: a GPT-2 built from a local ``GPT2Config``, and loading with clear errors.

The same training code runs on this 2-layer model on a laptop CPU and on a real checkpoint on
a GPU: every algorithm in minirlhf only needs a causal LM with the Hugging Face interface.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
import torch
from torch import nn

from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from minirlhf.logprobs import position_ids_from_mask
from minirlhf.tokenizer import build_tokenizer
from minirlhf.utils import (CHECKPOINT_INFO, check_checkpoint_dir, no_transformers_progress_bars,
                            read_checkpoint_info, save_atomically)


def tiny_gpt_config(tokenizer: PreTrainedTokenizerFast, n_layer: int = 2, n_embd: int = 64,
                    n_head: int = 4, n_positions: int = 64, dropout: float = 0.0) -> GPT2Config:
    """A GPT-2 config sized for the toy world (about 110k parameters with the defaults).

    Dropout defaults to 0: the corpus is tiny and clean, and RL needs a deterministic policy.
    """
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_gpt(tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0,
                   **config_kwargs) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """A randomly initialised tiny GPT and its tokenizer. ``config_kwargs`` go to
    :func:`tiny_gpt_config`."""
    import torch

    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_gpt_config(tokenizer, **config_kwargs))
    return model, tokenizer


def check_tokenizer_matches(model, tokenizer) -> None:
    """Raise ValueError if ``tokenizer`` cannot drive ``model`` (vocabulary or special ids differ)."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding has only {vocab}: "
            "they do not belong together. Load the tokenizer saved with this model."
        )
    pad = model.config.pad_token_id
    if pad is not None and pad != tokenizer.pad_token_id:
        raise ValueError(
            f"The model's pad_token_id is {pad} but the tokenizer's is {tokenizer.pad_token_id}. "
            "Load the tokenizer saved with this model."
        )


def check_reward_model(reward_model, tokenizer) -> None:
    """Refuse a reward model that reads token ids differently from the policy's ``tokenizer``.

    PPO hands the policy's token ids straight to the reward model, so both must share one
    vocabulary (same words at the same ids, same PAD and EOS).
    """
    if not callable(reward_model):
        raise TypeError("reward_model must be a module whose forward(input_ids, attention_mask) "
                        "returns one score per row (a minirlhf.reward.RewardModel), or None.")
    own = getattr(reward_model, "tokenizer", None)
    if own is not None:
        same = (own.get_vocab() == tokenizer.get_vocab() and own.pad_token_id == tokenizer.pad_token_id
                and own.eos_token_id == tokenizer.eos_token_id)
        if not same:
            raise ValueError("The reward model's tokenizer differs from the policy's (vocabulary or "
                             "PAD/EOS ids): its scores would read other words. Train the reward model "
                             "with the policy's tokenizer (minirlhf.tokenizer.build_tokenizer()).")
        return
    backbone = getattr(reward_model, "backbone", reward_model)
    embeddings = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
    if embeddings is not None and embeddings.num_embeddings != len(tokenizer):
        raise ValueError(f"The reward model's embedding has {embeddings.num_embeddings} tokens but the "
                         f"tokenizer has {len(tokenizer)}: they do not belong together. Train the "
                         "reward model with the policy's tokenizer.")


# ---------------------------------------------------------------------------------------------
# Saving and loading: what a checkpoint is, and which tokenizer its weights were trained with
# ---------------------------------------------------------------------------------------------

REWARD_MODEL_FILE = "reward_model.json"
"""The file that marks a reward model's checkpoint (see :meth:`minirlhf.reward.RewardModel.save`)."""

LOADERS = {"causal_lm": "minirlhf.models.load_model(path)",
           "reward_model": "minirlhf.reward.load_reward_model(path)"}
"""The function that loads each kind of checkpoint."""


def tokenizer_fingerprint(tokenizer) -> str:
    """The sha256 of ``tokenizer``'s sorted vocabulary and special ids: two tokenizers with the same
    fingerprint turn every text into the same ids."""
    special = [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]
    text = json.dumps([sorted(tokenizer.get_vocab().items()), special])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_info(kind: str, tokenizer=None) -> dict:
    """What a save records in :data:`~minirlhf.utils.CHECKPOINT_INFO`: the checkpoint's ``kind``
    (a key of :data:`LOADERS`) and the fingerprint of the tokenizer saved with it (or None)."""
    return {"kind": kind, "tokenizer_sha256": None if tokenizer is None else tokenizer_fingerprint(tokenizer)}


def check_checkpoint_kind(path: Path, kind: str) -> dict:
    """Refuse a checkpoint of another ``kind`` than the caller loads (a reward model read as a causal
    LM would start from random weights). Returns the checkpoint's recorded info."""
    info = read_checkpoint_info(path)
    if info is None:  # saved before minirlhf recorded it: only a reward model's own file tells the kind
        info = {"kind": "reward_model" if (path / REWARD_MODEL_FILE).is_file() else "causal_lm"}
    found = info.get("kind")
    if found != kind:
        raise ValueError(f"{str(path)!r} holds a {found} checkpoint, not a {kind} (see its "
                         f"{CHECKPOINT_INFO}): load it with {LOADERS.get(found, 'the code that saved it')}.")
    return info


def load_tokenizer(path: Path, info: dict) -> PreTrainedTokenizerFast:
    """The tokenizer saved in checkpoint ``path`` (left padding), refused when its fingerprint differs
    from the one ``info`` recorded at save time: its words would not be the weights' words."""
    file = path / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"The checkpoint {str(path)!r} has no tokenizer.json: copy it from where the "
                                "checkpoint was saved, or save model and tokenizer again with save_model.")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    tokenizer.padding_side = "left"
    recorded, found = info.get("tokenizer_sha256"), tokenizer_fingerprint(tokenizer)
    if recorded and recorded != found:
        raise ValueError(
            f"The tokenizer in {file} (fingerprint {found[:12]}) is not the one the weights were saved "
            f"with (fingerprint {recorded[:12]}, recorded in {path / CHECKPOINT_INFO}): the model would "
            "read other words. Put back the tokenizer files saved with these weights, or save model and "
            "tokenizer again together with save_model.")
    return tokenizer


@contextlib.contextmanager
def reading_weights(file: Path):
    """Turn the error of a damaged weights ``file`` (cut short, not safetensors) into one that names it."""
    try:
        yield
    except SafetensorError as error:
        raise ValueError(f"Cannot read the weights in {file} ({error}): the file is damaged, e.g. a "
                         "copy cut short. Copy the whole checkpoint folder again, or save the model again."
                         ) from error


def save_model(model, tokenizer, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Save model (safetensors) and tokenizer as the checkpoint folder ``path``, with ``extra_files``
    (name -> text) beside them; safe against interruptions and never deleting a file minirlhf did
    not write (see :func:`minirlhf.utils.save_atomically`)."""
    with no_transformers_progress_bars():
        return save_atomically([model, tokenizer], path, checkpoint_info("causal_lm", tokenizer), extra_files)


def load_model(path: str | Path, device=None) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer saved by :func:`save_model` (no pickle involved).

    Refuses a reward model's checkpoint, a damaged weights file, and a tokenizer that is not the
    one the weights were saved with.
    """
    from transformers import AutoModelForCausalLM

    path = check_checkpoint_dir(path)
    tokenizer = load_tokenizer(path, check_checkpoint_kind(path, "causal_lm"))
    with no_transformers_progress_bars(), reading_weights(path / "model.safetensors"):
        model, loading = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                              output_loading_info=True)
    if loading["missing_keys"]:  # from_pretrained would fill them with random numbers
        raise ValueError(f"{path / 'model.safetensors'} lacks weights of the model "
                         f"({', '.join(sorted(loading['missing_keys'])[:3])}, ...): is it a causal LM "
                         "saved with save_model?")
    check_tokenizer_matches(model, tokenizer)
    if device is not None:
        model.to(device)
    return model, tokenizer


def write_reward_model_files(reward_model, path: str | Path) -> None:
    """Write a reward model's ``config.json`` (its backbone's), ``model.safetensors`` and
    ``reward_model.json`` (how it was built) into the folder ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    reward_model.backbone.config.save_pretrained(path)
    state = {k: v.detach().contiguous().cpu() for k, v in reward_model.state_dict().items()}
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    info = {"kind": "minirlhf.RewardModel", "freeze_backbone": reward_model.freeze_backbone,
            "attention_only": reward_model.attention_only}
    (path / REWARD_MODEL_FILE).write_text(json.dumps(info, indent=2))


def save_reward_model(reward_model, path: str | Path, tokenizer=None) -> Path:
    """Save a :class:`~minirlhf.reward.RewardModel` (and ``tokenizer``) as the checkpoint folder
    ``path``, as :func:`save_model` does."""
    objects = [reward_model] + ([tokenizer] if tokenizer is not None else [])
    return save_atomically(objects, path, checkpoint_info("reward_model", tokenizer))


def read_reward_model(cls, path: str | Path, device=None):
    """Load the reward model (of class ``cls``) saved in ``path``, in eval mode, with its tokenizer as
    ``.tokenizer`` (None if none was saved). Refuses a causal LM's checkpoint."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    path = check_checkpoint_dir(path)
    if not (path / REWARD_MODEL_FILE).is_file():
        raise ValueError(f"{str(path)!r} holds no reward model (no {REWARD_MODEL_FILE}). To start "
                         "one from a causal LM use RewardModel.from_base(load_model(path)[0]).")
    info = check_checkpoint_kind(path, "reward_model")
    options = json.loads((path / REWARD_MODEL_FILE).read_text())
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(path))
    model = cls(backbone, freeze_backbone=options["freeze_backbone"],
                attention_only=options.get("attention_only", False))
    with reading_weights(path / "model.safetensors"):
        model.load_state_dict(load_file(path / "model.safetensors"))
    if (path / "tokenizer.json").is_file():
        model.tokenizer = load_tokenizer(path, info)
        check_tokenizer_matches(model.backbone, model.tokenizer)
    if device is not None:
        model.to(device)
    return model.eval()


# The base model that later stages start from. It ships with the package (about 0.5 MB) so that
# notebooks never wait for SFT; `minirlhf sft --out <folder>` trains it again with the same defaults.
BASE_MODEL_DIR = Path(__file__).parent / "checkpoints" / "sft-tiny-gpt"


def load_base_model(path: str | Path | None = None, device=None):
    """Load the SFT base model (the shipped one unless ``path`` is given), in eval mode.

    Returns ``(model, tokenizer)``; this model is also the frozen reference pi_ref of PPO and DPO.
    """
    model, tokenizer = load_model(path or BASE_MODEL_DIR, device=device)
    return model.eval(), tokenizer


def embedding_param_groups(model, learning_rate: float, embedding_lr_scale: float) -> list[dict]:
    """Two optimiser parameter groups for ``model``: its token-embedding matrix (GPT-2's output
    layer too: the matrix is tied) at ``learning_rate * embedding_lr_scale``, everything else at
    ``learning_rate``. Each group also keeps its multiplier as ``lr_scale``, for training loops
    that set the rate of every group by hand at each step.

    The embeddings' group comes first: GPT-2's embedding matrix is its first parameter, so the
    groups list the parameters in the model's own order, and a gradient norm taken over them
    (:func:`minirlhf.utils.clip_grad_norm`) adds up in the same order as over ``model.parameters()``.
    """
    embeddings = model.get_input_embeddings().weight
    return [{"params": [embeddings], "lr": learning_rate * embedding_lr_scale,
             "lr_scale": embedding_lr_scale},
            {"params": [p for p in model.parameters() if p is not embeddings],
             "lr": learning_rate, "lr_scale": 1.0}]


def transformer_blocks(model) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM: GPT-2's ``transformer.h`` (or ``layers``,
    as Llama-style models name it)."""
    base = model.base_model
    for name in ("h", "layers"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"Cannot find the transformer blocks of a {type(model).__name__}: expected a "
                     "GPT-2-style model (base_model.h) or one with base_model.layers.")


@contextlib.contextmanager
def frozen_blocks(model, n_blocks: int):
    """Keep the first ``n_blocks`` transformer blocks of ``model`` as they are while training:
    their parameters get no gradient (``requires_grad`` off, so no optimiser moves them and the
    gradient norm leaves them out). On exit every parameter gets back its ``requires_grad``."""
    if n_blocks == 0:
        yield
        return
    blocks = transformer_blocks(model)
    if not 0 < n_blocks <= len(blocks):
        raise ValueError(f"frozen_blocks must be between 0 and the model's {len(blocks)} blocks, "
                         f"got {n_blocks}.")
    params = [p for block in blocks[:n_blocks] for p in block.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@contextlib.contextmanager
def fused_gelu(*models):
    """Run GPT-2's ``gelu_new`` activation as PyTorch's one-kernel ``GELU(approximate="tanh")``.

    It is the same function (log-probs agree to about 1e-6), computed in one operation instead of
    seven, which makes a training step of the tiny model about 15% faster on a CPU. The original
    modules are put back on exit, so the models leave as they came. ``None`` entries are skipped.
    """
    swapped = [(parent, name, child) for model in models if model is not None
               for parent in model.modules() for name, child in parent.named_children()
               if type(child).__name__ == "NewGELUActivation"]
    for parent, name, _ in swapped:
        setattr(parent, name, nn.GELU(approximate="tanh"))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


class Critic(nn.Module):
    """V(x, y_<t): a transformer trunk and a scalar head. ``forward(input_ids, attention_mask)``
    gives (B, T): ``out[:, t]`` is the value of the state in which token t is chosen, ``out[:, 0] = 0``."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # V = 0 at the start: no made-up values
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_model(cls, model) -> Critic:
        """A critic whose trunk is a copy of ``model``'s transformer (e.g. the SFT model's)."""
        return cls(copy.deepcopy(model.base_model)).requires_grad_(True)

    @classmethod
    def from_reward_model(cls, reward_model) -> Critic:
        """A copy of a :class:`minirlhf.reward.RewardModel` (trunk, and head with the score normalisation
        folded in) read at every position: its first values are already on the score's scale, as in TRL."""
        critic = cls(copy.deepcopy(reward_model.backbone))
        with torch.no_grad():  # (raw - mean) / std  ==  head'(h) with w' = w / std, b' = (b - mean) / std
            std = reward_model.score_std
            critic.head.weight.copy_(reward_model.head.weight / std)
            critic.head.bias.copy_((reward_model.head.bias - reward_model.score_mean) / std)
        return critic.requires_grad_(True)  # the reward model may have frozen parts of its trunk

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values V(x, y_<t) of shape (B, T) for ids and mask of shape (B, T); ``out[:, 0] = 0``."""
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask),
                            use_cache=False).last_hidden_state  # one pass, no KV cache needed
        values = self.head(hidden[:, :-1]).squeeze(-1).float()
        return nn.functional.pad(values, (1, 0))
