"""The model runtime with the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M on llama.cpp.

The model comes from NIGHTSHIFT_TEST_MODEL_PATH when set, else from the model store; the tests skip, saying
why, when neither has it. Completions are kept short: the whole module runs in about a minute on 2 cores.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "llama_cpp", reason="the agent's dependencies are not installed (pip install -e services/agent)"
)

from nightshift_agent.adapters import AdapterError, write_random_lora_gguf  # noqa: E402
from nightshift_agent.runtime import (  # noqa: E402
    PROMPT_CHUNK,
    LlamaGenerator,
    ModelKey,
    ModelPool,
    PromptTooLongError,
    QueueFullError,
)

pytestmark = pytest.mark.model

MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
N_CTX = 2048
ADD = [{"role": "user", "content": "Write a Rust function that adds two i32 numbers. Code only."}]
PROBE = "<|im_start|>user\nWrite a Rust function that reverses a string.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def model_path() -> Path:
    explicit = os.environ.get("NIGHTSHIFT_TEST_MODEL_PATH")
    if explicit:
        if not Path(explicit).is_file():
            pytest.skip(f"NIGHTSHIFT_TEST_MODEL_PATH={explicit} is not a file")
        return Path(explicit)
    try:
        from nightshift.models import ModelError, ModelStore
    except ImportError as err:
        pytest.skip(f"no model store to find {MODEL_NAME} ({err}); set NIGHTSHIFT_TEST_MODEL_PATH")
    try:
        return ModelStore().resolve(MODEL_NAME)
    except ModelError as err:
        pytest.skip(f"{MODEL_NAME} is not available ({err}); run `nightshift models fetch {MODEL_NAME}`")


@pytest.fixture(scope="module")
def base(model_path) -> LlamaGenerator:
    generator = LlamaGenerator(model_path, n_ctx=N_CTX)
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def adapter(model_path, tmp_path_factory) -> Path:
    # random A and B: unlike a fresh PEFT adapter (B = 0) this one must visibly change the model
    path = tmp_path_factory.mktemp("adapters") / "random" / "adapter.gguf"
    return write_random_lora_gguf(path, model_path, rank=8, alpha=16.0, scale=0.05, seed=1)


@pytest.fixture(scope="module")
def zero_adapter(model_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("adapters") / "zero" / "adapter.gguf"
    return write_random_lora_gguf(path, model_path, rank=8, alpha=16.0, scale=0.05, seed=1, zero_b=True)


def long_program(n: int = 40) -> str:
    return "\n".join(f"fn helper_{i}(x: i32) -> i32 {{ x * {i} + {i % 7} }}" for i in range(n))


def fix_chat(note: str) -> list[dict]:
    return [
        {"role": "system", "content": "You fix Rust programs. Answer with the whole file in one rust block."},
        {
            "role": "user",
            "content": f'```rust\n{long_program()}\nfn main() {{ let v: i32 = "x"; }}\n```\n{note}',
        },
    ]


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Max abs difference and cosine similarity of two logit vectors."""
    return float(np.max(np.abs(a - b))), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_greedy_generation_is_identical_across_instances(base, model_path):
    first = base.generate(ADD, max_tokens=24, temperature=0.0, seed=0)
    assert first.text.strip() and first.completion_tokens <= 24
    assert first.prompt_tokens == base.count_prompt_tokens(ADD)
    assert first.finish_reason in ("stop", "length")
    other = LlamaGenerator(model_path, n_ctx=N_CTX)
    try:
        # greedy decoding ignores the seed
        assert other.generate(ADD, max_tokens=24, temperature=0.0, seed=99).text == first.text
    finally:
        other.close()
    again = base.generate(ADD, max_tokens=24, temperature=0.0, seed=0)
    assert again.text == first.text


def test_seeded_sampling_repeats_and_another_seed_differs(base):
    chat = [{"role": "user", "content": "Invent a name for a Rust crate and describe it in one sentence."}]

    def sample(seed: int) -> str:
        return base.generate(chat, max_tokens=20, temperature=1.0, seed=seed).text

    one = sample(1)
    assert sample(1) == one
    assert sample(2) != one


def test_token_counting(base):
    assert base.count_tokens("") == 0
    assert 3 <= base.count_tokens("fn main() {}") <= 8
    assert base.count_tokens("let x = 1;\n" * 20) > 10 * base.count_tokens("let x = 1;\n")
    rendered = base.render_prompt(ADD)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    # the template's markers are single special tokens, not spelled out
    assert base.count_prompt_tokens(ADD) < base.count_tokens(rendered)
    assert base.count_prompt_tokens(ADD) > base.count_tokens(ADD[0]["content"])


def test_bad_requests_are_refused_with_the_field_named(base):
    with pytest.raises(ValueError, match=r"messages\[0\]\.role"):
        base.generate([{"role": "robot", "content": "hi"}], max_tokens=4, temperature=0.0, seed=0)
    with pytest.raises(ValueError, match="max_tokens"):
        base.generate(ADD, max_tokens=0, temperature=0.0, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        base.generate(ADD, max_tokens=4, temperature=-1.0, seed=0)
    with pytest.raises(PromptTooLongError, match="no room"):
        base.generate([{"role": "user", "content": "word " * N_CTX}], max_tokens=4, temperature=0.0, seed=0)


def test_prefix_reuse_keeps_outputs_identical(base, model_path):
    attempt_1, attempt_2 = fix_chat("Attempt 1."), fix_chat("Attempt 2: the last answer failed with E0308.")
    shared = base.count_prompt_tokens(fix_chat(""))
    base.generate(attempt_1, max_tokens=8, temperature=0.0, seed=0)
    warm = base.generate(attempt_2, max_tokens=16, temperature=1.0, seed=3)
    # only whole aligned chunks of the earlier prompt are kept
    assert shared - 2 * PROMPT_CHUNK < warm.reused_prompt_tokens <= shared
    assert warm.reused_prompt_tokens % PROMPT_CHUNK == 0
    assert warm.evaluated_prompt_tokens < warm.prompt_tokens / 4
    fresh = LlamaGenerator(model_path, n_ctx=N_CTX)
    try:
        cold = fresh.generate(attempt_2, max_tokens=16, temperature=1.0, seed=3)
        assert cold.reused_prompt_tokens == 0
        assert cold.text == warm.text
        prompt_2 = base.render_prompt(attempt_2)
        base.logits_for(base.render_prompt(attempt_1))
        assert np.array_equal(base.logits_for(prompt_2), fresh.logits_for(prompt_2))
    finally:
        fresh.close()


def test_adapter_really_applies(base, model_path, adapter, zero_adapter):
    plain = base.logits_for(PROBE)
    assert plain.shape == (base.n_vocab,) and plain.dtype == np.float32
    assert np.array_equal(base.logits_for(PROBE), plain)
    for path, moved in ((zero_adapter, False), (adapter, True)):
        adapted = LlamaGenerator(model_path, path, n_ctx=N_CTX)
        try:
            max_diff, cosine = compare(adapted.logits_for(PROBE), plain)
        finally:
            adapted.close()
        if moved:
            # a zero-effect adapter moves nothing (below); this one moves the logits by whole units
            assert max_diff > 2.0 and cosine < 0.99, (max_diff, cosine)
        else:
            assert max_diff < 1e-3, max_diff


def test_an_adapter_llama_cpp_refuses_is_an_error_not_a_silent_base_model(model_path, tmp_path, monkeypatch):
    # an adapter for other dims, past the header checks: llama.cpp itself must be seen to refuse it
    tiny_base = tmp_path / "tiny.gguf"
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(tiny_base, arch="qwen2")
    writer.add_type("model")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((16, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    wrong = write_random_lora_gguf(tmp_path / "wrong.gguf", tiny_base, rank=2, layers=[0], targets=["attn_q"])
    monkeypatch.setattr(LlamaGenerator, "check_files", staticmethod(lambda model, adapter: None))
    with pytest.raises(AdapterError, match="llama.cpp could not load the adapter"):
        LlamaGenerator(model_path, wrong, n_ctx=256)


async def test_pool_switches_adapters_and_returns_to_the_base(model_path, adapter, base):
    plain = base.logits_for(PROBE)
    pool = ModelPool(max_instances=1, n_ctx=N_CTX)
    try:
        assert compare(await pool.logits_for(model_path, None, PROBE), plain)[0] < 1e-3
        adapted = await pool.logits_for(model_path, adapter, PROBE)
        assert pool.loaded() == [ModelKey.of(model_path, adapter)]
        assert compare(adapted, plain)[0] > 2.0
        back = await pool.logits_for(model_path, None, PROBE)
        assert pool.loaded() == [ModelKey.of(model_path, None)]
        assert compare(back, plain)[0] < 1e-3
    finally:
        await pool.close()
    assert pool.loaded() == []


async def test_pool_keeps_the_most_recently_used_instances(model_path, adapter, zero_adapter):
    pool = ModelPool(max_instances=2, n_ctx=N_CTX)
    try:
        await pool.count_tokens(model_path, None, "fn main() {}")
        await pool.count_tokens(model_path, adapter, "fn main() {}")
        await pool.count_tokens(model_path, None, "fn main() {}")
        await pool.count_tokens(model_path, zero_adapter, "fn main() {}")
        assert pool.loaded() == [ModelKey.of(model_path, None), ModelKey.of(model_path, zero_adapter)]
    finally:
        await pool.close()


async def test_pool_serialises_one_instance_and_bounds_the_queue(model_path):
    pool = ModelPool(max_instances=1, queue_size=1, n_ctx=N_CTX)
    try:
        await pool.count_tokens(model_path, None, "warm up")

        async def ask():
            return await pool.generate(model_path, None, ADD, max_tokens=12, temperature=0.0, seed=0)

        results = await asyncio.gather(ask(), ask(), ask(), return_exceptions=True)
        refused = [r for r in results if isinstance(r, QueueFullError)]
        answered = [r for r in results if not isinstance(r, BaseException)]
        assert len(refused) == 1 and "queue size 1" in str(refused[0])
        assert len(answered) == 2 and answered[0].text == answered[1].text
        assert pool.waiting == 0
    finally:
        await pool.close()


async def test_a_cancelled_request_frees_the_instance_only_when_llama_cpp_is_done(model_path):
    pool = ModelPool(max_instances=1, n_ctx=N_CTX)
    try:
        expected = await pool.generate(model_path, None, ADD, max_tokens=12, temperature=0.0, seed=0)
        chat = [{"role": "user", "content": "Write a Rust program with twenty documented functions."}]
        long_task = asyncio.ensure_future(
            pool.generate(model_path, None, chat, max_tokens=400, temperature=0.0, seed=0)
        )
        await asyncio.sleep(1.0)
        long_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long_task
        after = await pool.generate(model_path, None, ADD, max_tokens=12, temperature=0.0, seed=0)
        assert after.text == expected.text
    finally:
        await pool.close()


async def test_pool_passes_errors_through_and_stays_usable(model_path):
    pool = ModelPool(max_instances=1, n_ctx=256)
    try:
        with pytest.raises(ValueError, match=r"messages\[0\]\.content"):
            await pool.generate(model_path, None, [{"role": "user"}], max_tokens=4, temperature=0.0, seed=0)
        too_long = [{"role": "user", "content": "word " * 300}]
        with pytest.raises(PromptTooLongError):
            await pool.generate(model_path, None, too_long, max_tokens=4, temperature=0.0, seed=0)
        assert pool.waiting == 0
        done = await pool.generate(model_path, None, ADD, max_tokens=4, temperature=0.0, seed=0)
        assert done.completion_tokens == 4 and done.finish_reason == "length"
        with pytest.raises(FileNotFoundError):
            await pool.count_tokens(model_path.with_name("missing.gguf"), None, "x")
        assert pool.loaded() == [ModelKey.of(model_path, None)]
    finally:
        await pool.close()
