"""Training a LoRA adapter on a mix of examples: SFT on completions or DPO on preference pairs.

The base weights come from the very GGUF file the agent serves (transformers dequantises it), or from a
plain Hugging Face model directory (the tests' tiny model). Each example becomes the conversation the
agent's model saw (`nightshift.chat.messages_for(prompt)`, rendered with the model's own chat template)
followed by the assistant's answer; the loss covers the answer tokens only.

The loop is written here rather than handed to TRL's SFTTrainer/DPOTrainer, because the job needs, for
both methods alike: a progress report with tokens/s and ETA, cancellation between any two steps that
leaves a checkpoint, checkpoints that resume bit-for-bit (the data order, the dropout masks and the
learning rate are pure functions of (seed, step), so a resumed run takes exactly the steps an
uninterrupted one would), an optional L2 penalty towards the previous adapter, and a loss computed only
at the answer positions (the 152k-entry vocabulary makes full-sequence logits the largest tensor of a
step). The objectives are TRL's: token-mean cross-entropy on the completion, and DPO's sigmoid loss
-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) with the reference being the policy's starting
point without a second model in memory: the network with the adapter disabled (a fresh adapter starts
at B = 0, so that is the same function) or, when training continues a previous adapter, that adapter's
weights swapped in for the reference pass.

Checkpoints live in `<work_dir>/checkpoints/step-NNNNNN/` (LoRA weights, optimizer state, progress), the
finished adapter in `<work_dir>/peft/` (adapter_model.safetensors + adapter_config.json). A checkpoint
records a fingerprint of the preset, the examples and the model; resuming with different ones is refused.

Measured on the 2-core CPU here (AMX; bf16 base, LoRA weights in float32; train-split koans as prompts,
prompt + answer 380-620 tokens), `cpu-lora` (batch 1 x 4 accumulated, ~1,750 tokens a step) on the 0.5B:
7.1 s/step, 248 tokens/s, so its 100 steps take about 12 minutes; peak RSS 4.5 GiB, set by transformers
dequantising the GGUF at load. With other processes busy on the two cores the same run measured
58-108 tokens/s. One 512-token forward + backward takes 2-5 s in bf16 and 12-26 s in float32 there. On a
2-core CPU without bf16 instructions the order flips (torch emulates bf16): with the naive preset's LoRA,
a float32 step of 1 x 4 took 26 s (91 tokens/s), of batch 4 with checkpointing 50 s, and the bf16 one
about 150 s; presets therefore default to `dtype=auto` (presets.auto_dtype).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nightshift.chat import messages_for

from nightshift_trainer.examples import Example
from nightshift_trainer.presets import Preset, check_runnable

IGNORE = -100
CHECKPOINTS = "checkpoints"
PEFT_DIR = "peft"
_STATE = "state.json"
_LORA = "lora.safetensors"
_OPTIMIZER = "optimizer.pt"


@dataclass(frozen=True)
class Progress:
    """One progress report: the step just finished and how fast the run goes."""

    step: int
    total_steps: int
    loss: float  # mean training loss over the steps since the previous report (without the L2 penalty)
    tokens_per_second: float  # tokens fed to the model (prompt + answer) per second, this session
    eta_seconds: float


@dataclass(frozen=True)
class TrainResult:
    """A finished run. Seconds and tokens add up over every session of a resumed run."""

    peft_dir: Path
    steps: int
    final_loss: float  # mean loss of the last `log_every` steps
    train_seconds: float
    train_tokens: int
    device: str
    resumed_from_step: int  # 0 for a fresh run
    examples_used: int = 0
    examples_truncated: int = 0  # answers cut at max_seq_len
    examples_skipped: int = 0  # prompts that left no room for a single answer token
    peak_rss_bytes: int = 0

    @property
    def seconds_per_step(self) -> float:
        return self.train_seconds / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


class TrainingCancelled(Exception):
    """should_stop() asked the run to stop; a checkpoint at `step` lets a later call resume."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"training cancelled after step {step}")
        self.step = step
        self.checkpoint = checkpoint


class CheckpointMismatchError(ValueError):
    """The work directory's checkpoint belongs to a run with other settings, examples or model."""


# --- pure pieces -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sequences:
    """One example as token ids: the rendered prompt and one answer (SFT) or two (DPO)."""

    index: int  # position in the examples list
    prompt: tuple[int, ...]
    answers: tuple[tuple[int, ...], ...]  # (completion,) or (chosen, rejected)
    truncated: bool = False


def render_chat(tokenizer, prompt: str, answer: str) -> tuple[str, str]:
    """(prompt text up to the assistant's turn, the assistant's turn) in the model's chat template."""
    messages = messages_for(prompt)
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    )
    if not whole.startswith(head):
        raise ValueError("the model's chat template renders the answered chat with a different prefix")
    return head, whole[len(head) :]


def encode_example(tokenizer, example: Example, index: int, max_seq_len: int) -> Sequences | None:
    """Token ids of an example, answers cut to fit max_seq_len; None when the prompt leaves no room.

    The prompt and the answer are tokenized apart, as the served model sees them: it reads the prompt's
    tokens and then produces the answer's one by one.
    """
    answers = (example.chosen, example.rejected) if example.kind == "dpo" else (example.completion,)
    prompt_ids: list[int] | None = None
    encoded = []
    for answer in answers:
        head, turn = render_chat(tokenizer, example.prompt, answer)
        if prompt_ids is None:
            prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        encoded.append(tokenizer(turn, add_special_tokens=False)["input_ids"])
    assert prompt_ids is not None
    room = max_seq_len - len(prompt_ids)
    if room < 1:
        return None
    truncated = any(len(ids) > room for ids in encoded)
    return Sequences(index, tuple(prompt_ids), tuple(tuple(ids[:room]) for ids in encoded), truncated)


def example_order(n_examples: int, step: int, per_step: int, seed: int) -> list[int]:
    """Indices of the examples of 0-based `step`: epochs of seeded permutations, read in order."""
    if n_examples < 1:
        raise ValueError("n_examples: at least one example is needed")
    order = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, within = divmod(position, n_examples)
        order.append(int(_permutation(n_examples, seed, epoch)[within]))
    return order


_PERMUTATIONS: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _PERMUTATIONS:
        if len(_PERMUTATIONS) > 64:
            _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERMUTATIONS[key]


def learning_rate_at(step: int, preset: Preset) -> float:
    """The learning rate of 0-based `step`: linear warm-up, then linear decay towards 0 at max_steps."""
    peak, warmup, total = preset.learning_rate, preset.warmup_steps, preset.max_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def step_seed(seed: int, step: int, micro: int) -> int:
    """The dropout seed of one forward pass, so that a resumed run draws the same masks."""
    digest = hashlib.sha256(f"{seed}:{step}:{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    """DPO's sigmoid loss per pair from summed answer log-probabilities (torch tensors)."""
    import torch.nn.functional as F

    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin)


def update_distance_sq(a, b, scale: float, a0, b0, scale0: float):
    """||scale * B A - scale0 * B0 A0||_F^2 without forming the (out x in) products.

    With <X, Y> = trace(X^T Y): <B A, B0 A0> = sum((B^T B0) * (A A0^T)), all rank x rank matrices.
    """

    def inner(a1, b1, a2, b2):
        return ((b1.T @ b2) * (a1 @ a2.T)).sum()

    return (
        scale * scale * inner(a, b, a, b)
        - 2 * scale * scale0 * inner(a, b, a0, b0)
        + scale0 * scale0 * inner(a0, b0, a0, b0)
    )


# --- the model ---------------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


def load_base(model_path: Path, dtype: str, *, device: str = "cpu", quantize_4bit: bool = False):
    """(model, tokenizer) from a GGUF file (dequantised) or a Hugging Face model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = Path(model_path)
    torch_dtype = _torch_dtype(dtype)
    if model_path.is_file():
        source, extra = model_path.parent, {"gguf_file": model_path.name}
    elif (model_path / "config.json").is_file():
        source, extra = model_path, {}
    else:
        raise FileNotFoundError(f"model_path: {model_path} is neither a GGUF file nor a model directory")
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    if quantize_4bit:
        model = _load_4bit(source, extra, torch_dtype)
    else:
        with _quiet_gguf_packing_advice():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **extra)
        # the GGUF weights are dequantised plain tensors now: the quantizer is only a marker that would
        # make PEFT and save_pretrained treat the model as packed
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.to(device)
    model.config.use_cache = False
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@contextlib.contextmanager
def _quiet_gguf_packing_advice() -> Iterator[None]:
    """transformers 5 advises float32 for packed GGUF weights, but qwen2 GGUFs are dequantised on load
    (only some architectures stay packed), so the advice does not apply to the models here."""
    import logging

    logger = logging.getLogger("transformers.quantizers.quantizer_gguf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_4bit(source: Path, extra: Mapping[str, str], compute_dtype):
    """QLoRA: the base as bitsandbytes NF4 on CUDA. Not exercised on CPU-only machines."""
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
    )
    if not extra:
        return AutoModelForCausalLM.from_pretrained(
            source, quantization_config=quantization, device_map={"": 0}, dtype=compute_dtype
        )
    # a GGUF carries its own quantizer: dequantise it, write plain safetensors, quantise those to NF4
    plain = AutoModelForCausalLM.from_pretrained(source, dtype=compute_dtype, **extra)
    plain.hf_quantizer = None
    if getattr(plain.config, "quantization_config", None) is not None:
        del plain.config.quantization_config
    with tempfile.TemporaryDirectory(prefix="nightshift-qlora-") as tmp:
        plain.save_pretrained(tmp)
        del plain
        return AutoModelForCausalLM.from_pretrained(
            tmp, quantization_config=quantization, device_map={"": 0}, dtype=compute_dtype
        )


def _lora_config(preset: Preset):
    from peft import LoraConfig

    return LoraConfig(
        r=preset.lora_r,
        lora_alpha=preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        target_modules=list(preset.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _module_key(name: str) -> str:
    """The module path of a LoRA parameter, from a live model ('...q_proj.lora_A.default.weight') or a
    saved adapter ('...q_proj.lora_A.weight'), with the A/B part kept: '...q_proj.lora_A'."""
    name = name.replace(".default.weight", ".weight")
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _read_previous(previous_peft_dir: Path, preset: Preset) -> tuple[dict[str, Any], float]:
    """The previous adapter's LoRA tensors (keyed like _module_key) and its scale alpha / r."""
    from safetensors.torch import load_file

    config_path = Path(previous_peft_dir) / "adapter_config.json"
    weights_path = Path(previous_peft_dir) / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ValueError(f"previous_peft_dir: {previous_peft_dir} holds no PEFT adapter")
    config = json.loads(config_path.read_text())
    targets = config.get("target_modules") or []
    if (
        int(config.get("r", 0)) != preset.lora_r
        or float(config.get("lora_alpha", 0)) != preset.lora_alpha
        or sorted(targets) != sorted(preset.target_modules)
    ):
        raise ValueError(
            f"previous_peft_dir: the previous adapter (r={config.get('r')}, "
            f"alpha={config.get('lora_alpha')}, "
            f"modules {sorted(targets)}) differs from preset {preset.name} (r={preset.lora_r}, "
            f"alpha={preset.lora_alpha}, modules {sorted(preset.target_modules)}): it cannot be continued"
        )
    tensors = {_module_key(k): v.float() for k, v in load_file(weights_path).items()}
    return tensors, float(config["lora_alpha"]) / float(config["r"])


class _Run:
    """The state of one training session: model, optimizer, examples, checkpoints."""

    def __init__(self, model, tokenizer, preset: Preset, device: str):
        self.model = model  # the PeftModel
        self.base = model.get_base_model()
        self.tokenizer = tokenizer
        self.preset = preset
        self.device = device
        self.pad_id = int(tokenizer.pad_token_id)
        self.lora = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.reference_cache: dict[int, tuple[float, float]] = {}
        self.previous: dict[str, Any] | None = None
        self.previous_scale = 0.0

    # forward passes

    def answer_logprobs(self, items: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]):
        """Summed log-probability of each (prompt, answer) pair's answer, and the answer tokens fed."""
        import torch

        lengths = [len(p) + len(a) for p, a in items]
        width = max(lengths)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for row, (prompt, answer) in enumerate(items):
            sequence = list(prompt) + list(answer)
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
            # the position before each answer token predicts it
            for offset, token in enumerate(answer):
                rows.append(row)
                cols.append(len(prompt) - 1 + offset)
                targets.append(token)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        picked = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
        logits = self.base.get_output_embeddings()(picked).float()
        target = torch.tensor(targets, device=self.device)
        token_logprobs = -torch.nn.functional.cross_entropy(logits, target, reduction="none")
        sums = torch.zeros(len(items), device=self.device, dtype=token_logprobs.dtype)
        sums = sums.index_add(0, torch.tensor(rows, device=self.device), token_logprobs)
        return sums, sum(lengths)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """The policy's starting point: the previous adapter's weights, or the adapter disabled."""
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self.previous is None:
                    with self.model.disable_adapter():
                        yield
                else:
                    saved = {name: p.detach().clone() for name, p in self.lora.items()}
                    for name, p in self.lora.items():
                        p.copy_(self.previous[_module_key(name)])
                    try:
                        yield
                    finally:
                        for name, p in self.lora.items():
                            p.copy_(saved[name])
        finally:
            self.model.train(was_training)

    def reference_logprobs(self, sequences: Sequences) -> tuple[float, float]:
        """(chosen, rejected) log-probabilities under the reference, one sequence at a time and cached,
        so they do not depend on how a step's batch is padded."""
        if sequences.index not in self.reference_cache:
            with self.reference():
                values = [
                    float(self.answer_logprobs([(sequences.prompt, answer)])[0][0])
                    for answer in sequences.answers
                ]
            self.reference_cache[sequences.index] = (values[0], values[1])
        return self.reference_cache[sequences.index]

    def micro_loss(self, batch: Sequence[Sequences], denominator: float):
        """The loss of one forward pass, already divided by the step's denominator; and tokens fed."""
        import torch

        if self.preset.method == "sft":
            sums, tokens = self.answer_logprobs([(s.prompt, s.answers[0]) for s in batch])
            return -sums.sum() / denominator, tokens
        references = torch.tensor([self.reference_logprobs(s) for s in batch], device=self.device)
        items = [(s.prompt, s.answers[0]) for s in batch] + [(s.prompt, s.answers[1]) for s in batch]
        sums, tokens = self.answer_logprobs(items)
        n = len(batch)
        losses = dpo_loss(sums[:n], sums[n:], references[:, 0], references[:, 1], self.preset.dpo_beta)
        return losses.sum() / denominator, tokens

    def l2_penalty(self):
        """l2_to_previous * sum over modules of ||update - previous update||^2 (None when off)."""
        if self.previous is None or self.preset.l2_to_previous <= 0:
            return None
        scale = self.preset.lora_alpha / self.preset.lora_r
        total = None
        for name, a in self.lora.items():
            key = _module_key(name)
            if not key.endswith(".lora_A"):
                continue
            b_key = key[: -len("lora_A")] + "lora_B"
            b = self.lora[name.replace("lora_A", "lora_B")]
            term = update_distance_sq(
                a,
                b,
                scale,
                self.previous[key].to(a.device),
                self.previous[b_key].to(a.device),
                self.previous_scale,
            )
            total = term if total is None else total + term
        return None if total is None else self.preset.l2_to_previous * total

    # checkpoints

    def lora_state(self) -> dict[str, Any]:
        return {name: p.detach().to("cpu").contiguous() for name, p in self.lora.items()}

    def load_lora_state(self, state: Mapping[str, Any]) -> None:
        import torch

        missing = set(self.lora) - set(state)
        if missing:
            raise CheckpointMismatchError(
                f"the checkpoint lacks {len(missing)} LoRA tensors, e.g. {min(missing)}"
            )
        with torch.no_grad():
            for name, p in self.lora.items():
                p.copy_(state[name])


def _fingerprint(preset: Preset, examples: Sequence[Example], model_path: Path, previous: Path | None) -> str:
    fields = {
        k: v for k, v in preset.as_fields().items() if k not in ("log_every", "checkpoint_every", "name")
    }
    model_path = Path(model_path)
    model_id = [model_path.name, model_path.stat().st_size if model_path.is_file() else 0]
    previous_id = ""
    if previous is not None:
        weights = Path(previous) / "adapter_model.safetensors"
        previous_id = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else str(previous)
    payload = json.dumps(
        [fields, [e.example_id for e in examples], model_id, previous_id],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint under work_dir (complete = its state.json was written last)."""
    root = Path(work_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / _STATE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def _save_checkpoint(work_dir: Path, step: int, run: _Run, optimizer, state: Mapping[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_file

    root = Path(work_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    partial = root / f".step-{step:06d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_file(run.lora_state(), partial / _LORA)
    torch.save(optimizer.state_dict(), partial / _OPTIMIZER)
    (partial / _STATE).write_text(json.dumps(state))  # written last: marks the checkpoint complete
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for older in root.glob("step-*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def _save_peft(model, work_dir: Path) -> Path:
    target = Path(work_dir) / PEFT_DIR
    partial = Path(work_dir) / f".{PEFT_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, save_embedding_layers=False)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def _check_examples(examples: Sequence[Example], preset: Preset) -> None:
    if not examples:
        raise ValueError("examples: at least one example is needed")
    for example in examples:
        if example.kind != preset.method:
            raise ValueError(
                f"examples: preset {preset.name} trains {preset.method}, but example {example.example_id} "
                f"is a {example.kind} example"
            )


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_adapter(
    *,
    model_path: Path,
    examples: Sequence[Example],
    preset: Preset,
    work_dir: Path,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    should_stop: Callable[[], bool] = lambda: False,
    previous_peft_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `examples` and save it in `work_dir/peft`; resume from work_dir's checkpoint.

    `should_stop` is asked before every step; when it answers True the run saves a checkpoint and raises
    TrainingCancelled. With `previous_peft_dir` the adapter starts from that adapter's weights (same rank,
    alpha and modules required), DPO's reference is that adapter, and `l2_to_previous` > 0 penalises the
    distance between the two adapters' updates.
    """
    import torch
    from peft import get_peft_model

    check_runnable(preset)
    _check_examples(examples, preset)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(preset, examples, model_path, previous_peft_dir)
    checkpoint = latest_checkpoint(work_dir)
    saved_state: dict[str, Any] = {}
    if checkpoint is not None:
        saved_state = json.loads((checkpoint / _STATE).read_text())
        if saved_state.get("fingerprint") != fingerprint:
            raise CheckpointMismatchError(
                f"work_dir: {work_dir} holds a checkpoint of another run (other preset, examples, model or "
                "previous adapter); use a fresh work_dir"
            )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    previous, previous_scale = (
        (None, 0.0) if previous_peft_dir is None else _read_previous(previous_peft_dir, preset)
    )
    model, tokenizer = load_base(model_path, preset.dtype, device=device, quantize_4bit=preset.quantize_4bit)
    if preset.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=preset.gradient_checkpointing
        )
    elif preset.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(preset.seed)  # the LoRA A initialisation
    # peft 0.21 reads a property transformers 5 deprecates; the warning says nothing about this run
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, _lora_config(preset))
    run = _Run(peft_model, tokenizer, preset, device)
    if previous is not None:
        run.previous, run.previous_scale = previous, previous_scale
        unknown = {_module_key(n) for n in run.lora} - set(previous)
        if unknown:
            raise ValueError(f"previous_peft_dir: the previous adapter has no {min(unknown)}")
        run.load_lora_state({name: previous[_module_key(name)] for name in run.lora})

    encoded = [
        encode_example(tokenizer, example, i, preset.max_seq_len) for i, example in enumerate(examples)
    ]
    usable = [s for s in encoded if s is not None]
    if not usable:
        raise ValueError(
            f"examples: every prompt is longer than max_seq_len={preset.max_seq_len} tokens; "
            "nothing to train on"
        )
    optimizer = torch.optim.AdamW(
        list(run.lora.values()), lr=preset.learning_rate, weight_decay=preset.weight_decay
    )
    start_step = 0
    losses: list[float] = []
    tokens_before, seconds_before = 0, 0.0
    if checkpoint is not None:
        from safetensors.torch import load_file

        run.load_lora_state(load_file(checkpoint / _LORA))
        optimizer.load_state_dict(torch.load(checkpoint / _OPTIMIZER, weights_only=True))
        start_step = int(saved_state["step"])
        losses = [float(x) for x in saved_state["losses"]]
        tokens_before, seconds_before = int(saved_state["tokens"]), float(saved_state["seconds"])

    per_step = preset.examples_per_step
    session_start = time.perf_counter()
    session_tokens = 0
    reported = start_step

    def state_at(step: int) -> dict[str, Any]:
        return {
            "fingerprint": fingerprint,
            "step": step,
            "losses": losses,
            "tokens": tokens_before + session_tokens,
            "seconds": seconds_before + (time.perf_counter() - session_start),
        }

    peft_model.train()
    for step in range(start_step, preset.max_steps):
        if should_stop():
            saved = _save_checkpoint(work_dir, step, run, optimizer, state_at(step)) if step > 0 else None
            raise TrainingCancelled(step, saved)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, preset)
        order = [usable[i] for i in example_order(len(usable), step, per_step, preset.seed)]
        denominator = (
            float(sum(len(s.answers[0]) for s in order)) if preset.method == "sft" else float(len(order))
        )
        step_loss = 0.0
        for micro in range(preset.gradient_accumulation):
            batch = order[micro * preset.batch_size : (micro + 1) * preset.batch_size]
            torch.manual_seed(step_seed(preset.seed, step, micro))
            loss, tokens = run.micro_loss(batch, denominator)
            loss.backward()
            step_loss += float(loss.detach())
            session_tokens += tokens
        penalty = run.l2_penalty()
        if penalty is not None:
            penalty.backward()
        if preset.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(run.lora.values()), preset.max_grad_norm)
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"the training loss became {step_loss} at step {step + 1}")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        done = step + 1
        if done % preset.log_every == 0 or done == preset.max_steps:
            elapsed = time.perf_counter() - session_start
            steps_this_session = done - start_step
            window = losses[reported:done]
            on_progress(
                Progress(
                    step=done,
                    total_steps=preset.max_steps,
                    loss=sum(window) / len(window),
                    tokens_per_second=session_tokens / elapsed if elapsed > 0 else 0.0,
                    eta_seconds=(preset.max_steps - done) * elapsed / steps_this_session,
                )
            )
            reported = done
        if done % preset.checkpoint_every == 0 or done == preset.max_steps:
            _save_checkpoint(work_dir, done, run, optimizer, state_at(done))

    final = state_at(preset.max_steps)
    peft_dir = _save_peft(peft_model, work_dir)
    tail = losses[-preset.log_every :]
    return TrainResult(
        peft_dir=peft_dir,
        steps=preset.max_steps,
        final_loss=sum(tail) / len(tail) if tail else float("nan"),
        train_seconds=float(final["seconds"]),
        train_tokens=int(final["tokens"]),
        device=device,
        resumed_from_step=start_step,
        examples_used=len(usable),
        examples_truncated=sum(1 for s in usable if s.truncated),
        examples_skipped=len(encoded) - len(usable),
        peak_rss_bytes=peak_rss_bytes(),
    )
