"""One job's blocking work: train the adapter, export it to GGUF, verify it against transformers+PEFT.

Runs in the worker thread. torch, transformers and llama.cpp load only here, so the gRPC side of the
trainer starts fast and a bad install shows up as a failed job with the reason, not a dead service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nightshift.v1 import trainer_pb2

from nightshift_trainer.examples import Example
from nightshift_trainer.presets import Preset
from nightshift_trainer.training import Progress, TrainingCancelled, TrainResult

__all__ = ["Outcome", "TrainingCancelled", "device_name", "train_export_verify"]


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Outcome:
    train: TrainResult
    adapter_path: Path
    verification: trainer_pb2.AdapterVerification | None

    def metrics(self) -> dict[str, float]:
        figures = {
            "final_loss": self.train.final_loss,
            "train_seconds": self.train.train_seconds,
            "train_tokens": float(self.train.train_tokens),
            "steps": float(self.train.steps),
        }
        if self.verification is not None:
            figures["verify_max_abs_diff"] = self.verification.max_abs_diff
            figures["verify_adapter_effect"] = self.verification.adapter_effect
            figures["verify_tolerance"] = self.verification.tolerance
        return figures


def train_export_verify(
    *,
    model_path: Path,
    examples: Sequence[Example],
    preset: Preset,
    work_dir: Path,
    adapter_path: Path,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    threads: int,
    verify: bool = True,
    previous_peft_dir: Path | None = None,
) -> Outcome:
    """Train (resuming from work_dir's checkpoint), export to `adapter_path`, verify when asked."""
    import torch

    from nightshift_trainer.export import export_gguf_lora
    from nightshift_trainer.training import train_adapter
    from nightshift_trainer.verify import verify_adapter

    torch.set_num_threads(threads)
    result = train_adapter(
        model_path=Path(model_path),
        examples=examples,
        preset=preset,
        work_dir=work_dir,
        on_progress=on_progress,
        should_stop=should_stop,
        previous_peft_dir=previous_peft_dir,
    )
    adapter_path.parent.mkdir(parents=True, exist_ok=True)
    export_gguf_lora(result.peft_dir, adapter_path, base_model_path=Path(model_path))
    verification = None
    if verify:
        v = verify_adapter(
            model_path=Path(model_path), peft_dir=result.peft_dir, gguf_adapter_path=adapter_path
        )
        verification = trainer_pb2.AdapterVerification(
            passed=v.passed,
            tolerance=v.tolerance,
            max_abs_diff=v.max_abs_diff,
            adapter_effect=v.adapter_effect,
            reference_effect=v.reference_effect,
            prompt=v.prompt,
            detail=v.detail,
        )
    return Outcome(result, adapter_path, verification)
