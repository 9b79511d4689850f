"""LoRA training: the pure pieces, then real SFT/DPO runs on a tiny random Qwen2 model (CPU, seconds), and
one slow run on the real 0.5B GGUF."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nightshift import archive, events  # noqa: E402
from nightshift.chat import answer_for  # noqa: E402
from nightshift.models import ModelStore  # noqa: E402
from nightshift.v1 import events_pb2  # noqa: E402
from nightshift_trainer.examples import make_example  # noqa: E402
from nightshift_trainer.presets import PresetError, resolve_preset  # noqa: E402
from nightshift_trainer.training import (  # noqa: E402
    CheckpointMismatchError,
    Progress,
    TrainingCancelled,
    dpo_loss,
    encode_example,
    example_order,
    latest_checkpoint,
    learning_rate_at,
    train_adapter,
    update_distance_sq,
)
from safetensors.torch import load_file  # noqa: E402
from tiny_qwen import build_tokenizer, corpus_examples, dpo_examples, sft_examples, write_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def fast(method: str = "sft", **overrides) -> object:
    """A preset for the tiny model: float32, a high learning rate, a few steps."""
    fields = {
        "dtype": "float32",
        "learning_rate": "0.02",
        "max_steps": "12",
        "warmup_steps": "2",
        "batch_size": "2",
        "gradient_accumulation": "2",
        "max_seq_len": "256",
        "log_every": "2",
        "checkpoint_every": "4",
        "lora_dropout": "0.1",
    }
    fields.update({k: str(v) for k, v in overrides.items()})
    return resolve_preset("dpo" if method == "dpo" else "cpu-lora", fields)


def adapter_tensors(peft_dir: Path) -> dict:
    return load_file(peft_dir / "adapter_model.safetensors")


# --- pure pieces --------------------------------------------------------------------------------


def test_an_example_becomes_the_served_prompt_and_the_answer_turn(tokenizer):
    example = sft_examples()[0]
    seq = encode_example(tokenizer, example, 3, max_seq_len=512)
    assert seq.index == 3 and not seq.truncated and len(seq.answers) == 1
    prompt = tokenizer.decode(list(seq.prompt))
    assert prompt.startswith("<|im_start|>system\nYou are an expert Rust programmer")
    assert prompt.endswith(f"{example.prompt}<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(list(seq.answers[0])) == example.completion + "<|im_end|>\n"


def test_a_dpo_pair_shares_one_prompt(tokenizer):
    example = dpo_examples()[1]
    seq = encode_example(tokenizer, example, 0, max_seq_len=512)
    chosen, rejected = (tokenizer.decode(list(ids)) for ids in seq.answers)
    assert chosen == example.chosen + "<|im_end|>\n" and rejected == example.rejected + "<|im_end|>\n"


def test_long_answers_are_cut_and_prompts_without_room_are_skipped(tokenizer):
    example = sft_examples()[0]
    full = encode_example(tokenizer, example, 0, max_seq_len=512)
    cut = encode_example(tokenizer, example, 0, max_seq_len=len(full.prompt) + 5)
    assert cut.truncated and cut.answers[0] == full.answers[0][:5] and cut.prompt == full.prompt
    assert encode_example(tokenizer, example, 0, max_seq_len=len(full.prompt)) is None


def test_example_order_is_seeded_epochs_of_permutations():
    steps = [example_order(5, step, 2, seed=7) for step in range(10)]
    stream = [i for step in steps for i in step]
    for epoch in range(4):
        assert sorted(stream[epoch * 5 : epoch * 5 + 5]) == list(range(5))
    assert steps == [example_order(5, step, 2, seed=7) for step in range(10)]
    assert stream != [i for step in range(10) for i in example_order(5, step, 2, seed=8)]
    assert example_order(5, 3, 2, seed=7) == stream[6:8]  # any step can be computed on its own


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.25), (1, 0.5), (3, 1.0), (4, 1.0), (9, 0.5), (13, 1 / 10)],
)
def test_learning_rate_warms_up_then_decays_linearly(step, expected):
    preset = resolve_preset("cpu-lora", {"learning_rate": "1.0", "warmup_steps": "4", "max_steps": "14"})
    assert learning_rate_at(step, preset) == pytest.approx(expected)


def test_update_distance_equals_the_frobenius_norm_of_the_products():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 30, generator=g), torch.randn(20, 4, generator=g)
    a0, b0 = torch.randn(4, 30, generator=g), torch.randn(20, 4, generator=g)
    direct = ((2.0 * b @ a - 0.5 * b0 @ a0) ** 2).sum()
    assert float(update_distance_sq(a, b, 2.0, a0, b0, 0.5)) == pytest.approx(float(direct), rel=1e-4)
    assert float(update_distance_sq(a, b, 2.0, a, b, 2.0)) == pytest.approx(0.0, abs=1e-2)


@pytest.mark.parametrize(
    ("margins", "expected"),
    [((0.0, 0.0, 0.0, 0.0), math.log(2)), ((10.0, 0.0, 0.0, 0.0), math.log1p(math.exp(-1.0))),
     ((0.0, 10.0, 0.0, 0.0), math.log1p(math.exp(1.0))), ((3.0, 1.0, 3.0, 1.0), math.log(2))],
)  # fmt: skip
def test_dpo_loss_is_the_sigmoid_loss_of_the_reward_margin(margins, expected):
    values = [torch.tensor([m]) for m in margins]
    assert float(dpo_loss(*values, beta=0.1)[0]) == pytest.approx(expected, rel=1e-6)


# --- runs on the tiny model -----------------------------------------------------------------------


def test_sft_trains_the_adapter_and_leaves_the_base_alone(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reports: list[Progress] = []
    preset = fast(max_steps=16)
    result = train_adapter(
        model_path=tiny_model,
        examples=sft_examples(),
        preset=preset,
        work_dir=tmp_path,
        on_progress=reports.append,
    )
    assert result.peft_dir == tmp_path / "peft"
    assert {p.name for p in result.peft_dir.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"}
    assert (result.steps, result.resumed_from_step, result.device) == (16, 0, "cpu")
    assert result.examples_used == 6 and result.train_tokens > 0 and result.peak_rss_bytes > 0
    assert result.final_loss < reports[0].loss - 0.05, [r.loss for r in reports]

    tensors = adapter_tensors(result.peft_dir)
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())
    assert any(k.endswith("lora_B.weight") and t.abs().max() > 0 for k, t in tensors.items())
    assert not any("embed" in k or "lm_head" in k for k in tensors)

    ids = torch.tensor([list(range(1, 40))])
    pristine = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = pristine(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(pristine, result.peft_dir).eval()
        adapted_logits = adapted(input_ids=ids).logits
        with adapted.disable_adapter():
            disabled_logits = adapted(input_ids=ids).logits
    assert torch.equal(disabled_logits, base_logits)
    assert (adapted_logits - base_logits).abs().max() > 1e-3


def test_progress_comes_every_log_every_steps_and_ends_at_the_last(tiny_model, tmp_path):
    reports: list[Progress] = []
    train_adapter(
        model_path=tiny_model,
        examples=sft_examples(),
        preset=fast(max_steps=7, log_every=3),
        work_dir=tmp_path,
        on_progress=reports.append,
    )
    assert [r.step for r in reports] == [3, 6, 7]
    assert all(r.total_steps == 7 and r.tokens_per_second > 0 and r.loss > 0 for r in reports)
    assert reports[-1].eta_seconds == 0 and reports[0].eta_seconds > 0


def test_cancel_then_resume_gives_the_uninterrupted_adapter(tiny_model, tmp_path):
    preset = fast()
    whole = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=preset, work_dir=tmp_path / "a"
    )

    asked = []

    def stop_after_six() -> bool:
        asked.append(1)
        return len(asked) > 6  # asked before every step: True before step 7

    with pytest.raises(TrainingCancelled) as cancelled:
        train_adapter(
            model_path=tiny_model,
            examples=sft_examples(),
            preset=preset,
            work_dir=tmp_path / "b",
            should_stop=stop_after_six,
        )
    assert cancelled.value.step == 6
    assert cancelled.value.checkpoint == latest_checkpoint(tmp_path / "b")
    assert cancelled.value.checkpoint.name == "step-000006"
    assert not (tmp_path / "b" / "peft").exists()

    resumed = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=preset, work_dir=tmp_path / "b"
    )
    assert (resumed.resumed_from_step, resumed.steps) == (6, whole.steps)
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-5)
    one, two = adapter_tensors(whole.peft_dir), adapter_tensors(resumed.peft_dir)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_carried_by_an_event_archive_resumes_on_another_store(tiny_model, tmp_path):
    """The archive's job layout is the trainer's: a job cut short on one store, saved with `nightshift
    archive save` and restored into an empty one, finishes there with the uninterrupted adapter."""
    preset = fast(max_steps=10, checkpoint_every=4)
    whole = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=preset, work_dir=tmp_path / "a"
    )
    here, there = (archive.FileRoots(tmp_path / n / "adapters", tmp_path / n / "trainer") for n in ("x", "y"))
    job = here.trainer / "jobs" / "job-1"
    job.mkdir(parents=True)
    (job / "examples.json").write_text("[]")
    asked = []
    with pytest.raises(TrainingCancelled):
        train_adapter(
            model_path=tiny_model,
            examples=sft_examples(),
            preset=preset,
            work_dir=job / "work",
            should_stop=lambda: asked.append(1) or len(asked) > 6,
        )
    requested = events.wrap(events_pb2.TrainingJobRequested(job_id="job-1"))
    records = [archive.Record("TRAINING", "training.job.requested", requested)]
    files, steps, missing = archive.job_files(records, here.trainer)
    assert steps == {"job-1": 6} and missing == []
    archive.write(tmp_path / "events.jsonl.gz", records, files)

    _, _, carried = archive.read(tmp_path / "events.jsonl.gz")
    assert archive.restore_files(carried, there).jobs == {"job-1": 6}
    resumed = train_adapter(
        model_path=tiny_model,
        examples=sft_examples(),
        preset=preset,
        work_dir=there.trainer / "jobs" / "job-1" / "work",
    )
    assert (resumed.resumed_from_step, resumed.steps) == (6, whole.steps)
    for key, value in adapter_tensors(whole.peft_dir).items():
        torch.testing.assert_close(adapter_tensors(resumed.peft_dir)[key], value, rtol=1e-5, atol=1e-6)


def test_a_crash_resumes_from_the_last_periodic_checkpoint(tiny_model, tmp_path):
    preset = fast(max_steps=10, checkpoint_every=4, log_every=1)
    whole = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=preset, work_dir=tmp_path / "a"
    )

    def crash_at_six(progress: Progress) -> None:
        if progress.step == 6:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train_adapter(
            model_path=tiny_model,
            examples=sft_examples(),
            preset=preset,
            work_dir=tmp_path / "b",
            on_progress=crash_at_six,
        )
    assert latest_checkpoint(tmp_path / "b").name == "step-000004"
    resumed = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=preset, work_dir=tmp_path / "b"
    )
    assert resumed.resumed_from_step == 4
    for key, value in adapter_tensors(whole.peft_dir).items():
        torch.testing.assert_close(adapter_tensors(resumed.peft_dir)[key], value, rtol=1e-5, atol=1e-6)


def test_a_finished_run_called_again_returns_without_training(tiny_model, tmp_path):
    preset = fast(max_steps=4)
    train_adapter(model_path=tiny_model, examples=sft_examples(), preset=preset, work_dir=tmp_path)
    again = train_adapter(
        model_path=tiny_model,
        examples=sft_examples(),
        preset=preset,
        work_dir=tmp_path,
        on_progress=lambda p: pytest.fail("no step should run"),
    )
    assert again.resumed_from_step == 4 and again.steps == 4


def test_a_checkpoint_of_another_run_is_refused(tiny_model, tmp_path):
    with pytest.raises(TrainingCancelled):
        train_adapter(
            model_path=tiny_model,
            examples=sft_examples(),
            preset=fast(),
            work_dir=tmp_path,
            should_stop=iter([False, False, True]).__next__,
        )
    with pytest.raises(CheckpointMismatchError, match="checkpoint of another run"):
        train_adapter(model_path=tiny_model, examples=sft_examples()[:3], preset=fast(), work_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError):
        train_adapter(
            model_path=tiny_model, examples=sft_examples(), preset=fast(lora_r=4), work_dir=tmp_path
        )


def test_dpo_starts_at_log2_and_learns_to_prefer_the_chosen_answer(tiny_model, tmp_path):
    reports: list[Progress] = []
    result = train_adapter(
        model_path=tiny_model,
        examples=dpo_examples(),
        preset=fast("dpo", max_steps=16, log_every=1, learning_rate=0.05, dpo_beta=1.0),
        work_dir=tmp_path,
        on_progress=reports.append,
    )
    # the first step's policy is its own reference: every margin is 0, up to float32 rounding (the two
    # forward passes batch differently; on AVX-512 CPUs the loss came out 2e-6 below log 2)
    assert reports[0].loss == pytest.approx(math.log(2), abs=1e-5)
    assert result.final_loss < math.log(2) - 0.05, [r.loss for r in reports]
    assert any(t.abs().max() > 0 for k, t in adapter_tensors(result.peft_dir).items() if "lora_B" in k)


def test_dpo_continuing_a_previous_adapter_uses_it_as_the_reference(tiny_model, tmp_path):
    previous = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=fast(max_steps=6), work_dir=tmp_path / "sft"
    ).peft_dir
    reports: list[Progress] = []
    result = train_adapter(
        model_path=tiny_model,
        examples=dpo_examples(),
        preset=fast("dpo", max_steps=6, log_every=1, learning_rate=0.05, dpo_beta=1.0, lora_dropout=0),
        work_dir=tmp_path / "dpo",
        on_progress=reports.append,
        previous_peft_dir=previous,
    )
    # the policy starts as the previous adapter, which is the reference: margins 0 at the first step
    # (without dropout, which would make the training pass differ from the reference pass)
    assert reports[0].loss == pytest.approx(math.log(2), abs=1e-5)
    assert result.final_loss < math.log(2)
    trained, start = adapter_tensors(result.peft_dir), adapter_tensors(previous)
    assert any(not torch.equal(trained[k], start[k]) for k in start)


def test_continuing_a_previous_adapter_and_the_l2_anchor(tiny_model, tmp_path):
    previous = train_adapter(
        model_path=tiny_model,
        examples=sft_examples()[:3],
        preset=fast(max_steps=8),
        work_dir=tmp_path / "prev",
    ).peft_dir
    start = adapter_tensors(previous)

    def update_distance(peft_dir: Path) -> float:
        now = adapter_tensors(peft_dir)
        total = 0.0
        for key in now:
            if "lora_A" in key:
                b_key = key.replace("lora_A", "lora_B")
                total += float(((now[b_key] @ now[key] - start[b_key] @ start[key]) ** 2).sum())
        return total

    free = train_adapter(
        model_path=tiny_model,
        examples=sft_examples()[3:],
        preset=fast(max_steps=8),
        work_dir=tmp_path / "free",
        previous_peft_dir=previous,
    )
    anchored = train_adapter(
        model_path=tiny_model,
        examples=sft_examples()[3:],
        preset=fast(max_steps=8, l2_to_previous=50.0),
        work_dir=tmp_path / "anchored",
        previous_peft_dir=previous,
    )
    assert 0 < update_distance(anchored.peft_dir) < 0.5 * update_distance(free.peft_dir)

    none_step = train_adapter(
        model_path=tiny_model,
        examples=sft_examples(),
        preset=fast(max_steps=1, learning_rate=1e-9, warmup_steps=0),
        work_dir=tmp_path / "tiny-step",
        previous_peft_dir=previous,
    )
    assert update_distance(none_step.peft_dir) < 1e-6  # it started from the previous adapter's weights


def test_a_previous_adapter_of_another_shape_is_refused(tiny_model, tmp_path):
    previous = train_adapter(
        model_path=tiny_model, examples=sft_examples(), preset=fast(max_steps=1), work_dir=tmp_path / "p"
    ).peft_dir
    with pytest.raises(ValueError, match="previous_peft_dir: the previous adapter .* cannot be continued"):
        train_adapter(
            model_path=tiny_model,
            examples=sft_examples(),
            preset=fast(lora_r=4),
            work_dir=tmp_path / "q",
            previous_peft_dir=previous,
        )


def test_bad_inputs_are_refused_before_training(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="examples: at least one example"):
        train_adapter(model_path=tiny_model, examples=[], preset=fast(), work_dir=tmp_path)
    with pytest.raises(ValueError, match="trains sft, but example .* is a dpo example"):
        train_adapter(model_path=tiny_model, examples=dpo_examples(), preset=fast(), work_dir=tmp_path)
    with pytest.raises(ValueError, match="every prompt is longer than max_seq_len=16"):
        train_adapter(
            model_path=tiny_model, examples=sft_examples(), preset=fast(max_seq_len=16), work_dir=tmp_path
        )
    with pytest.raises(FileNotFoundError, match="model_path"):
        train_adapter(
            model_path=tmp_path / "nothing", examples=sft_examples(), preset=fast(), work_dir=tmp_path
        )
    import dataclasses

    four_bit = dataclasses.replace(fast(), quantize_4bit=True)
    if not torch.cuda.is_available():
        with pytest.raises(PresetError, match="CUDA"):
            train_adapter(model_path=tiny_model, examples=sft_examples(), preset=four_bit, work_dir=tmp_path)


def test_long_answers_are_counted_as_truncated(tiny_model, tmp_path, tokenizer):
    long = make_example(koan_id="long", prompt="Fix it.", completion=answer_for("fn f() {}\n" * 60))
    result = train_adapter(
        model_path=tiny_model,
        examples=[*sft_examples(), long],
        preset=fast(max_steps=2, max_seq_len=200),
        work_dir=tmp_path,
    )
    assert (result.examples_used, result.examples_truncated, result.examples_skipped) == (7, 1, 0)


# --- the real model -----------------------------------------------------------------------------


def real_model_path() -> Path:
    location = ModelStore().locate("qwen2.5-coder-0.5b-instruct-q4_k_m")
    if location.path is None:
        pytest.skip("the 0.5B model is not fetched (make models)")
    return location.path


@pytest.mark.model
@pytest.mark.slow
def test_cpu_lora_trains_a_few_steps_on_the_real_gguf(tmp_path):
    """Run under `flock /tmp/nightshift-model.lock`; prints seconds per step, tokens/s and peak RSS."""
    model_path = real_model_path()
    reports: list[Progress] = []
    preset = resolve_preset(
        "cpu-lora",
        {"max_steps": "3", "log_every": "1", "checkpoint_every": "2", "warmup_steps": "0"},
        cuda=False,
    )
    result = train_adapter(
        model_path=model_path,
        examples=corpus_examples(12),
        preset=preset,
        work_dir=tmp_path,
        on_progress=reports.append,
    )
    assert result.steps == 3 and [r.step for r in reports] == [1, 2, 3]
    assert all(np.isfinite(r.loss) and r.loss > 0 for r in reports)
    tensors = adapter_tensors(result.peft_dir)
    assert len(tensors) == 24 * 4 * 2  # 24 layers x q/k/v/o x (A, B)
    assert any(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)
    print(
        f"\nreal 0.5B cpu-lora: {result.seconds_per_step:.2f} s/step, "
        f"{result.tokens_per_second:.0f} tokens/s (batch {preset.batch_size} x accumulation "
        f"{preset.gradient_accumulation}, {result.train_tokens / result.steps:.0f} tokens/step), "
        f"peak RSS {result.peak_rss_bytes / 2**30:.2f} GiB, "
        f"losses {[round(r.loss, 3) for r in reports]}"
    )
