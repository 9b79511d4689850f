"""A tiny random Qwen2 model with its own small byte-level BPE tokenizer and a Qwen-style chat template,
built in a second, for training tests that must not need the real model; and a matching 'base GGUF'
(the qwen2 tensor names and dims, zero weights) for export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nightshift.chat import SYSTEM_PROMPT, answer_for
from nightshift_trainer.examples import Example, make_example

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 32, 64, 2, 4, 2

PROGRAMS = [
    ("fn add(a: i32, b: i32) -> i32 { a - b }", "fn add(a: i32, b: i32) -> i32 { a + b }"),
    ("fn double(x: u32) -> u32 { x * 3 }", "fn double(x: u32) -> u32 { x * 2 }"),
    ("fn is_even(n: i64) -> bool { n % 2 == 1 }", "fn is_even(n: i64) -> bool { n % 2 == 0 }"),
    ("fn first(v: &[u8]) -> u8 { v[1] }", "fn first(v: &[u8]) -> u8 { v[0] }"),
    ("fn neg(x: i8) -> i8 { x }", "fn neg(x: i8) -> i8 { -x }"),
    ("fn len(s: &str) -> usize { s.len() + 1 }", "fn len(s: &str) -> usize { s.len() }"),
]


def prompt_for(broken: str) -> str:
    return f"Fix this Rust program.\n\n```rust\n{broken}\n```"


def sft_examples() -> list[Example]:
    return [
        make_example(
            koan_id=f"k{i}", prompt=prompt_for(broken), completion=answer_for(fixed), origin="reference"
        )
        for i, (broken, fixed) in enumerate(PROGRAMS)
    ]


def dpo_examples() -> list[Example]:
    return [
        make_example(
            koan_id=f"k{i}",
            prompt=prompt_for(broken),
            chosen=answer_for(fixed),
            rejected=answer_for(broken),
            origin="episode",
        )
        for i, (broken, fixed) in enumerate(PROGRAMS)
    ]


def corpus_examples(count: int) -> list[Example]:
    """Reference fixes of train-split koans, with prompts about the size the agent sends."""
    from nightshift.corpus import Corpus

    task = "Fix this Rust program so that it compiles and its tests pass."
    return [
        make_example(
            koan_id=k.id,
            prompt=f"{task}\n\n```rust\n{k.broken}\n```",
            completion=answer_for(k.fix),
            origin="reference",
        )
        for k in Corpus.load().koans("train")[:count]
    ]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [SYSTEM_PROMPT] + [prompt_for(b) + answer_for(f) for b, f in PROGRAMS] * 4
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(vocab_size: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )


def write_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A random tiny Qwen2ForCausalLM and its tokenizer saved as a Hugging Face model directory."""
    import torch
    from transformers import Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config(len(tokenizer)))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_tiny_base_gguf(path: Path, hidden: int = HIDDEN, layers: int = LAYERS) -> Path:
    """A 'model' GGUF with qwen2 weight names and the tiny model's dims (zeros).

    numpy (out, in) is ggml ne (in, out)."""
    import gguf

    kv = hidden // HEADS * KV_HEADS
    shapes = {
        "attn_q": (hidden, hidden),
        "attn_k": (kv, hidden),
        "attn_v": (kv, hidden),
        "attn_output": (hidden, hidden),
        "ffn_gate": (INTERMEDIATE, hidden),
        "ffn_up": (INTERMEDIATE, hidden),
        "ffn_down": (hidden, INTERMEDIATE),
    }
    writer = gguf.GGUFWriter(path, arch="qwen2")
    writer.add_type("model")
    writer.add_uint32("qwen2.block_count", layers)
    writer.add_tensor("token_embd.weight", np.zeros((8, hidden), dtype=np.float32))
    for layer in range(layers):
        for name, shape in shapes.items():
            writer.add_tensor(f"blk.{layer}.{name}.weight", np.zeros(shape, dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((8, hidden), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
