"""Checking an exported GGUF adapter against the PEFT adapter it came from, before it is registered.

On a fixed prompt (a Rust fix task in the served chat format, up to the opening of the answer's code
block), four runs give next-token logits at the last POSITIONS positions: transformers (float32, the
same GGUF dequantised) without and with the PEFT adapter, and llama.cpp without and with the GGUF adapter.
Both runtimes read the same token ids.

llama.cpp does not compute what transformers computes: its matrix products quantise the activations (Q8)
to meet the quantised weights, so even the base models' logits differ. Measured on the 0.5B (Q4_K_M),
max |llama - transformers| over the last 16 positions x 151,936 logits is 0.85 on FIXED_PROMPT
(231 tokens) and 0.44 on another 162-token prompt (99th percentile 0.20). The comparison is therefore
between what the adapter changes in each runtime, D_llama = llama(adapter) - llama(base) and
D_hf = hf(peft) - hf(base):

    max_abs_diff     = max |D_llama - D_hf|
    reference_effect = max |D_hf|,  adapter_effect = max |D_llama|
    tolerance        = TOLERANCE + RELATIVE_TOLERANCE * reference_effect
    passed  <=>  max_abs_diff <= tolerance
                 and reference_effect >= EFFECT_FACTOR * TOLERANCE
                 and adapter_effect   >= EFFECT_FACTOR * TOLERANCE

The noise does not cancel in the difference (the adapter moves the activations llama.cpp rounds), and it
grows a little with the adapter's effect, hence the relative term. Measured (last 16 positions):

    adapter (r 8, alpha 16)                        reference_effect  max|D_llama - D_hf|  tolerance
    FIXED_PROMPT:
      trained cpu-lora, 20 steps of 1 koan, lr 1e-4        3.34              0.83            1.33  pass
      the same on 40 koans                                3.61              0.73            1.36  pass
      random N(0, 0.02^2), q/k/v/o                        5.48              0.90            1.55  pass
      that one with lora_b zeroed in the GGUF only        5.48              5.48 (D_llama 0)      fail
      that one with alpha doubled in the GGUF             5.48              7.23            1.55  fail
      that one with renamed tensors: llama.cpp refuses it                                         fail
    the 162-token prompt, random adapters:
      N(0, 0.01^2), q/k/v/o                               1.29              0.65   (too weak: fail)
      N(0, 0.02^2), all seven projections                 7.99              0.76            1.80  pass
      N(0, 0.04^2), q/k/v/o                              31.74              1.50            4.17  pass

An adapter that llama.cpp ignores (refused, lora_b lost) has D_llama = 0, so max_abs_diff is the
reference effect, which must be at least EFFECT_FACTOR * TOLERANCE = 2 > TOLERANCE + RELATIVE_TOLERANCE * 2:
it cannot pass, and adapter_effect fails it too. Nor can one applied at twice (or minus) its scale. An
adapter too weak to be told from the noise fails as well: it cannot be verified, and it would hardly
change what the agent does. What this cannot see is a small part of an adapter gone missing: the
40-koan adapter with layers 12-23 dropped from the GGUF still gave 0.95 <= 1.36. The export's own checks
(every PEFT tensor mapped, shapes against the base) cover that; this check proves the runtime applies
the file it is given, the right way round and at the right scale.

transformers runs first and is freed before llama.cpp loads, so only one copy of the model is in memory;
llama.cpp runs in a child process, because it aborts the process on some malformed adapters (and
llama-cpp-python 0.3.36 crashes evaluating with an adapter llama.cpp refused).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from nightshift.chat import messages_for

POSITIONS = 16
TOLERANCE = 1.0  # logits: above every correct export's measured max |D_llama - D_hf| with effects below 8
RELATIVE_TOLERANCE = 0.1
EFFECT_FACTOR = 2.0
ANSWER_OPENING = "```rust\n"

FIXED_PROMPT = """Fix this Rust program so that it compiles and its tests pass.

```rust
pub struct Stack {
    items: Vec<i32>,
}

impl Stack {
    pub fn new() -> Self {
        Stack { items: Vec::new() }
    }

    pub fn push(&self, value: i32) {
        self.items.push(value);
    }

    pub fn pop(&mut self) -> Option<i32> {
        self.items.pop()
    }
}
```

error[E0596]: cannot borrow `self.items` as mutable, as it is behind a `&` reference
 --> src/lib.rs:11:9"""


@dataclass(frozen=True)
class Verification:
    """The outcome of comparing the two runtimes; every number is in logits."""

    passed: bool
    tolerance: float  # the allowed max_abs_diff for this adapter (TOLERANCE + RELATIVE_TOLERANCE * effect)
    max_abs_diff: float  # max |D_llama - D_hf|
    adapter_effect: float  # max |D_llama|: what the GGUF adapter changes in llama.cpp
    reference_effect: float  # max |D_hf|: what the PEFT adapter changes in transformers
    prompt: str
    detail: str
    base_noise: float = 0.0  # max |llama(base) - hf(base)|: the runtimes' own disagreement
    positions: int = 0


def compare_deltas(
    hf_base: np.ndarray,
    hf_adapter: np.ndarray,
    llama_base: np.ndarray,
    llama_adapter: np.ndarray,
    *,
    tolerance: float = TOLERANCE,
    relative: float = RELATIVE_TOLERANCE,
    factor: float = EFFECT_FACTOR,
    prompt: str = "",
) -> Verification:
    """Apply the rule of the module docstring to four (positions x vocabulary) logit arrays."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (hf_base, hf_adapter, llama_base, llama_adapter)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"logits: the four runs disagree on the shape: {[a.shape for a in arrays]}")
    hb, ha, lb, la = arrays
    d_hf, d_llama = ha - hb, la - lb
    reference_effect = float(np.abs(d_hf).max())
    adapter_effect = float(np.abs(d_llama).max())
    max_abs_diff = float(np.abs(d_llama - d_hf).max())
    allowed = tolerance + relative * reference_effect
    needed = factor * tolerance
    problems = []
    if reference_effect < needed:
        problems.append(
            f"the PEFT adapter changes transformers' logits by at most {reference_effect:.3f}, less than "
            f"{needed:.3f} ({factor:g} x tolerance {tolerance:g}): too weak to verify"
        )
    if adapter_effect < needed:
        problems.append(
            f"the GGUF adapter changes llama.cpp's logits by at most {adapter_effect:.3f}, less than "
            f"{needed:.3f}: llama.cpp is not applying it"
        )
    if max_abs_diff > allowed:
        problems.append(
            f"llama.cpp's change differs from transformers' by up to {max_abs_diff:.3f}, more than the "
            f"tolerance {allowed:.3f}"
        )
    base_noise = float(np.abs(lb - hb).max())
    summary = (
        f"max |D_llama - D_hf| {max_abs_diff:.3f} (tolerance {allowed:.3f}); effects: llama.cpp "
        f"{adapter_effect:.3f}, transformers {reference_effect:.3f}; the base runtimes differ by "
        f"{base_noise:.3f} over the last {hb.shape[0]} positions"
    )
    return Verification(
        passed=not problems,
        tolerance=allowed,
        max_abs_diff=max_abs_diff,
        adapter_effect=adapter_effect,
        reference_effect=reference_effect,
        prompt=prompt,
        detail="; ".join(problems) + (": " if problems else "") + summary,
        base_noise=base_noise,
        positions=int(hb.shape[0]),
    )


def verification_tokens(tokenizer, prompt: str) -> list[int]:
    """The token ids both runtimes read: the served chat up to the assistant's turn, then the answer's
    opening code fence."""
    text = tokenizer.apply_chat_template(messages_for(prompt), tokenize=False, add_generation_prompt=True)
    return tokenizer(text + ANSWER_OPENING, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Reference:
    """What transformers + PEFT computes on the prompt, and the llama.cpp base logits beside it."""

    prompt: str
    tokens: list[int]
    hf_base: np.ndarray  # (positions x vocabulary)
    hf_adapter: np.ndarray
    llama_base: np.ndarray


def reference_logits(
    model_path: Path,
    peft_dir: Path,
    prompt: str = FIXED_PROMPT,
    positions: int = POSITIONS,
    dtype: str = "float32",
) -> Reference:
    """The four runs that do not involve the GGUF adapter: transformers with and without the PEFT adapter
    (the model freed afterwards), then llama.cpp's base model on the same tokens."""
    import torch
    from peft import PeftModel

    from nightshift_trainer.training import load_base

    model, tokenizer = load_base(Path(model_path), dtype)
    tokens = verification_tokens(tokenizer, prompt)
    if len(tokens) < positions:
        raise ValueError(f"prompt: {len(tokens)} tokens, fewer than the {positions} positions compared")
    adapted = PeftModel.from_pretrained(model, Path(peft_dir)).eval()
    ids = torch.tensor([tokens])
    with torch.no_grad():
        with_adapter = adapted(input_ids=ids, logits_to_keep=positions).logits[0].float().numpy().copy()
        with adapted.disable_adapter():
            without = adapted(input_ids=ids, logits_to_keep=positions).logits[0].float().numpy().copy()
    del adapted, model
    gc.collect()
    llama_base, problem = llama_logits(Path(model_path), None, tokens, positions)
    if llama_base is None:
        raise RuntimeError(f"llama.cpp could not evaluate the base model {Path(model_path).name}: {problem}")
    return Reference(prompt, tokens, without, with_adapter, llama_base)


def llama_logits(
    model_path: Path, adapter_path: Path | None, tokens: list[int], positions: int
) -> tuple[np.ndarray | None, str]:
    """(logits at the last `positions` positions, problem) from llama.cpp, run in a child process.

    A child, because llama.cpp aborts the whole process on some malformed inputs, and verification is
    where malformed adapters show up. `problem` is "" on success; otherwise the logits are None and it
    says what went wrong (llama.cpp refused the adapter, or the child died).
    """
    with tempfile.TemporaryDirectory(prefix="nightshift-verify-") as tmp:
        request, answer = Path(tmp) / "request.json", Path(tmp) / "logits.npy"
        request.write_text(
            json.dumps(
                {
                    "model": str(model_path),
                    "adapter": str(adapter_path) if adapter_path is not None else None,
                    "tokens": list(tokens),
                    "positions": positions,
                }
            )
        )
        child = subprocess.run(
            [sys.executable, "-m", "nightshift_trainer.verify", str(request), str(answer)],
            capture_output=True,
            text=True,
        )
        if child.returncode == _REFUSED:
            return None, "llama.cpp refused to load the adapter"
        if child.returncode != 0:
            tail = (child.stderr or child.stdout).strip()[-300:]
            return None, f"llama.cpp exited with status {child.returncode}: {tail}"
        return np.load(answer), ""


_REFUSED = 3  # the child's exit status when llama.cpp refuses the adapter


def _llama_child(request_path: str, answer_path: str) -> int:
    """The child process of llama_logits: evaluate the tokens, save the last positions' logits."""
    from llama_cpp import Llama

    request = json.loads(Path(request_path).read_text())
    tokens, positions = request["tokens"], request["positions"]
    batch = max(64, len(tokens))  # the whole prompt in one batch, the same for every run
    threads = os.cpu_count() or 1
    llama = Llama(
        model_path=request["model"],
        lora_path=request["adapter"],
        n_ctx=batch,
        n_batch=batch,
        n_ubatch=batch,
        logits_all=True,
        n_threads=threads,
        n_threads_batch=threads,
        seed=0,
        verbose=False,
    )
    try:
        # llama-cpp-python 0.3.36 keeps a NULL handle (not None) when llama.cpp refuses the adapter, and
        # evaluating with it crashes
        if request["adapter"] is not None and not llama._lora_adapter:
            return _REFUSED
        llama.eval(tokens)
        logits = np.array(llama.scores[len(tokens) - positions : len(tokens)], dtype=np.float32)
    finally:
        llama.close()
    np.save(answer_path, logits)
    return 0


def verify_adapter(
    *,
    model_path: Path,
    peft_dir: Path,
    gguf_adapter_path: Path,
    prompt: str = FIXED_PROMPT,
    tolerance: float = TOLERANCE,
    positions: int = POSITIONS,
    reference: Reference | None = None,
) -> Verification:
    """Compare llama.cpp + the GGUF adapter with transformers + the PEFT adapter on `prompt`.

    `model_path` is the base GGUF both runtimes load. `reference`, from `reference_logits` for the same
    model, PEFT adapter and prompt, saves recomputing it when several exports of one adapter are checked.
    Returns a Verification whose `passed` follows the module docstring's rule; it does not raise for an
    adapter that fails the comparison or that llama.cpp refuses.
    """
    if reference is None:
        reference = reference_logits(Path(model_path), Path(peft_dir), prompt, positions)
    elif reference.prompt != prompt or reference.hf_base.shape[0] != positions:
        raise ValueError("reference: computed for another prompt or number of positions")
    compare = dict(tolerance=tolerance, prompt=prompt)
    hf_base, hf_adapter, llama_base = reference.hf_base, reference.hf_adapter, reference.llama_base
    llama_adapter, problem = llama_logits(
        Path(model_path), Path(gguf_adapter_path), reference.tokens, positions
    )
    if llama_adapter is None:
        # what a runtime that carries on without the adapter computes
        result = compare_deltas(hf_base, hf_adapter, llama_base, llama_base, **compare)
        detail = f"{Path(gguf_adapter_path).name}: {problem}; {result.detail}"
        return replace(result, passed=False, detail=detail)
    return compare_deltas(hf_base, hf_adapter, llama_base, llama_adapter, **compare)


if __name__ == "__main__":
    raise SystemExit(_llama_child(sys.argv[1], sys.argv[2]))
