"""The model runtime: one llama.cpp instance per (base model, adapter), and a pool that shares them.

`LlamaGenerator` wraps one llama-cpp-python `Llama` (a GGUF base plus an optional LoRA adapter GGUF). It
renders chats with the model's own template (the GGUF's `tokenizer.chat_template`), decodes greedily at
temperature 0 and with a seeded sampler otherwise, and keeps the KV cache of its last prompt so that the
next prompt only evaluates the tokens after the longest shared prefix (attempts of one task share most of
their prompt), in whole aligned chunks so that a warm cache never changes the output. It is not
thread-safe: `ModelPool` serialises the calls per instance, bounds the queue, keeps at most a few
instances (LRU), and runs the blocking calls in threads for asyncio callers.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from nightshift_agent.adapters import AdapterError, check_adapter_compatible

DEFAULT_N_CTX = 4096
PROMPT_CHUNK = 128  # prompt tokens per decode batch; 128 was the fastest of 32..512 on 2 cores
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05
ROLES = ("system", "user", "assistant")
_MAX_SEED = 2**32 - 2  # 2**32 - 1 is llama.cpp's 'pick a random seed'

T = TypeVar("T")


class PromptTooLongError(ValueError):
    """The prompt leaves no room in the context for a single completion token."""


class QueueFullError(RuntimeError):
    """More requests are waiting for a model instance than the pool's queue admits."""


@dataclass(frozen=True)
class Generation:
    """One completion and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of the whole call
    finish_reason: str  # "stop" (end of turn), "length" (token cap or context end), "cancelled"
    prompt_seconds: float = 0.0  # until the first token was sampled: prompt evaluation
    reused_prompt_tokens: int = 0  # prompt tokens whose KV cache was kept from the previous call

    @property
    def evaluated_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.reused_prompt_tokens

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.evaluated_prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def completion_tokens_per_second(self) -> float:
        # the first token is sampled from the prompt's logits; the others each cost one decode step
        decode = self.seconds - self.prompt_seconds
        return (self.completion_tokens - 1) / decode if self.completion_tokens > 1 and decode > 0 else 0.0


def check_messages(messages: Sequence[dict]) -> list[dict[str, str]]:
    """Return the chat as plain {role, content} dicts, or raise ValueError naming the bad field."""
    if not messages:
        raise ValueError("messages: at least one message is required")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}]: expected a dict with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content: expected a string, got {type(content).__name__}")
        checked.append({"role": role, "content": content})
    return checked


class LlamaGenerator:
    """One llama.cpp model instance: a GGUF base model and optionally one LoRA adapter applied to it.

    Not thread-safe, except `count_tokens`, `render_prompt` and `count_prompt_tokens`, which read only
    the vocabulary and the template.
    """

    def __init__(
        self,
        model_path: Path | str,
        adapter_path: Path | str | None = None,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        seed: int = 0,
        adapter_scale: float = 1.0,
    ):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.model_path = Path(model_path)
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.check_files(self.model_path, self.adapter_path)
        self.n_threads = n_threads or os.cpu_count() or 1
        started = time.perf_counter()
        self._llama = Llama(
            model_path=str(self.model_path),
            lora_path=str(self.adapter_path) if self.adapter_path is not None else None,
            lora_scale=adapter_scale,
            n_ctx=n_ctx,
            n_batch=PROMPT_CHUNK,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            seed=seed,
            verbose=False,
        )
        self.load_seconds = time.perf_counter() - started
        # llama-cpp-python 0.3.36 tests the adapter handle with `is None`, which a NULL ctypes pointer never
        # is: a LoRA that llama.cpp refused would otherwise be silently left out
        if self.adapter_path is not None and not self._llama._lora_adapter:
            self.close()
            raise AdapterError(
                f"llama.cpp could not load the adapter {self.adapter_path} onto {self.model_path}"
            )
        self.n_ctx = self._llama.n_ctx()
        self.n_vocab = self._llama.n_vocab()
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            self.close()
            raise ValueError(
                f"model {self.model_path.name} has no tokenizer.chat_template in its GGUF header"
            )
        eos, bos = self._llama.token_eos(), self._llama.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos),
            bos_token=self._token_text(bos),
            add_generation_prompt=True,
        )
        import llama_cpp

        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._whole_chunks = 0  # cached prompt tokens evaluated in whole aligned chunks

    @staticmethod
    def check_files(model_path: Path, adapter_path: Path | None) -> None:
        """Refuse, with the reason, a missing model or an adapter llama.cpp would fail to load."""
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"model file {model_path} does not exist")
        if adapter_path is not None:
            check_adapter_compatible(Path(adapter_path), Path(model_path))

    def _token_text(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode("utf-8") if token >= 0 else ""

    def render_prompt(self, messages: Sequence[dict]) -> str:
        """The chat rendered with the model's own template, ending where the assistant's turn starts."""
        return self._formatter(messages=check_messages(messages)).prompt

    def prompt_token_ids(self, messages: Sequence[dict]) -> list[int]:
        rendered = self._formatter(messages=check_messages(messages))
        # special=True: the template's control tokens (<|im_start|> ...) must become single tokens
        return self._llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )

    def count_prompt_tokens(self, messages: Sequence[dict]) -> int:
        """Tokens of the whole rendered chat, as `generate` will feed them."""
        return len(self.prompt_token_ids(messages))

    def count_tokens(self, text: str) -> int:
        """Tokens of a piece of plain text (no template), for budgeting parts of a prompt."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def _evaluate(self, tokens: list[int]) -> int:
        """Bring the KV cache to exactly `tokens`, keeping what it can; return how many tokens were kept.

        llama.cpp's logits depend on how a prompt is cut into batches (up to 0.4 apart here: the CPU kernels
        for one row and for many round differently), so a prompt is always evaluated in chunks aligned to
        PROMPT_CHUNK positions, and only whole chunks of an earlier prompt are kept. A warm cache then gives
        bit-for-bit the logits of a cold one, and the same seed the same text.
        """
        llama = self._llama
        cached = llama.input_ids[: llama.n_tokens]
        n = min(len(cached), len(tokens))
        mismatch = np.flatnonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))
        shared = int(mismatch[0]) if mismatch.size else n
        keep = min(shared, self._whole_chunks, len(tokens) - 1)
        keep -= keep % PROMPT_CHUNK
        llama.n_tokens = keep  # eval() drops the KV cache past n_tokens before it decodes
        self._whole_chunks = keep
        position = keep
        while position < len(tokens):
            end = min(len(tokens), (position // PROMPT_CHUNK + 1) * PROMPT_CHUNK)
            llama.eval(tokens[position:end])
            position = end
        self._whole_chunks = len(tokens) - len(tokens) % PROMPT_CHUNK
        return keep

    def generate(
        self,
        messages: Sequence[dict],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        top_k: int = DEFAULT_TOP_K,
        top_p: float = DEFAULT_TOP_P,
        min_p: float = DEFAULT_MIN_P,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Complete the chat's next assistant turn.

        temperature 0 is greedy decoding; above 0, top-k/top-p/min-p sampling seeded with `seed`. The same
        messages, settings and seed give the same text, whatever the instance decoded before. At most
        `max_tokens` tokens, fewer when the context runs out (finish_reason "length" either way). `cancel`,
        when set from another thread, stops the decoding after the current token.
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be at least 1, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {temperature}")
        if not 0 <= seed <= _MAX_SEED:
            raise ValueError(f"seed: must be in [0, {_MAX_SEED}], got {seed}")
        started = time.perf_counter()
        tokens = self.prompt_token_ids(messages)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise PromptTooLongError(
                f"the prompt has {len(tokens)} tokens and the context holds {self.n_ctx}: no room to answer"
            )
        limit = min(max_tokens, room)
        reused = self._evaluate(tokens)
        self._llama.set_seed(seed)
        completion: list[int] = []
        finish_reason = "length"
        first_token_at = None
        # the whole prompt is in the cache now: Llama.generate samples from its logits without re-evaluating
        stream = self._llama.generate(
            tokens, top_k=top_k, top_p=top_p, min_p=min_p, temp=temperature, repeat_penalty=1.0, reset=True
        )
        for token in stream:
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if self._is_eog(self._vocab, token):
                finish_reason = "stop"
                break
            completion.append(token)
            if len(completion) >= limit:
                break
            if cancel is not None and cancel.is_set():
                finish_reason = "cancelled"
                break
        stream.close()
        finished = time.perf_counter()
        text = self._llama.detokenize(completion, prev_tokens=tokens).decode("utf-8", errors="replace")
        return Generation(
            text=text,
            prompt_tokens=len(tokens),
            completion_tokens=len(completion),
            seconds=finished - started,
            finish_reason=finish_reason,
            prompt_seconds=(first_token_at or finished) - started,
            reused_prompt_tokens=reused,
        )

    def logits_for(self, text: str) -> np.ndarray:
        """The next-token logits after `text` (tokenized with special tokens), as a float32 vector."""
        import llama_cpp

        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if not tokens:
            raise ValueError("text: nothing to evaluate")
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(f"the text has {len(tokens)} tokens and the context holds {self.n_ctx}")
        self._evaluate(tokens)
        row = llama_cpp.llama_get_logits_ith(self._llama.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        self._llama.close()


@dataclass(frozen=True)
class ModelKey:
    """What identifies a model instance: the base GGUF and the adapter GGUF applied to it (or none)."""

    model_path: Path
    adapter_path: Path | None = None

    @classmethod
    def of(cls, model_path: Path | str, adapter_path: Path | str | None = None) -> ModelKey:
        return cls(Path(model_path), Path(adapter_path) if adapter_path is not None else None)


class _Instance:
    def __init__(self, key: ModelKey, load: asyncio.Future):
        self.key = key
        self.load = load  # resolves to the LlamaGenerator
        self.lock = asyncio.Lock()  # one call on the llama context at a time
        self.users = 0  # requests holding or waiting for this instance; 0 means it may be evicted


class ModelPool:
    """Shared model instances keyed by (model, adapter) for asyncio callers.

    At most `max_instances` stay loaded; a request for another key evicts the least recently used idle
    one (and waits when every instance is busy). Calls on one instance run one at a time, in a worker
    thread; at most `max_running` run at once across instances, because on a small CPU two decodes at
    once are slower than one after the other. A request that cannot start at once waits in a queue of at
    most `queue_size`; beyond that it fails at once with QueueFullError.
    """

    def __init__(
        self,
        *,
        max_instances: int = 2,
        queue_size: int = 8,
        max_running: int = 1,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        adapter_scale: float = 1.0,
    ):
        if max_instances < 1 or queue_size < 1 or max_running < 1:
            raise ValueError("max_instances, queue_size and max_running must each be at least 1")
        self.max_instances = max_instances
        self.queue_size = queue_size
        self.max_running = max_running
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.adapter_scale = adapter_scale
        self._instances: OrderedDict[ModelKey, _Instance] = OrderedDict()
        self._running = asyncio.Semaphore(max_running)
        self._waiting = 0
        self._changed = asyncio.Event()  # set whenever an instance is released or dropped

    @property
    def waiting(self) -> int:
        """Requests admitted that have not started running yet."""
        return self._waiting

    def loaded(self) -> list[ModelKey]:
        """Keys of the instances held now, least recently used first."""
        return list(self._instances)

    async def generate(
        self,
        model_path: Path | str,
        adapter_path: Path | str | None,
        messages: Sequence[dict],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        **sampling: Any,
    ) -> Generation:
        """LlamaGenerator.generate on the shared instance for (model, adapter); see the class docstring."""
        messages = check_messages(messages)

        def call(generator: LlamaGenerator, cancel: threading.Event) -> Generation:
            return generator.generate(
                messages, max_tokens=max_tokens, temperature=temperature, seed=seed, cancel=cancel, **sampling
            )

        return await self._run(ModelKey.of(model_path, adapter_path), call)

    async def logits_for(
        self, model_path: Path | str, adapter_path: Path | str | None, text: str
    ) -> np.ndarray:
        return await self._run(ModelKey.of(model_path, adapter_path), lambda g, _: g.logits_for(text))

    async def count_prompt_tokens(
        self, model_path: Path | str, adapter_path: Path | str | None, messages: Sequence[dict]
    ) -> int:
        return await self._run(
            ModelKey.of(model_path, adapter_path),
            lambda g, _: g.count_prompt_tokens(messages),
            exclusive=False,
        )

    async def count_tokens(self, model_path: Path | str, adapter_path: Path | str | None, text: str) -> int:
        return await self._run(
            ModelKey.of(model_path, adapter_path), lambda g, _: g.count_tokens(text), exclusive=False
        )

    async def _run(
        self,
        key: ModelKey,
        call: Callable[[LlamaGenerator, threading.Event], T],
        *,
        exclusive: bool = True,
    ) -> T:
        """Run `call` on the instance for `key`: in a worker thread under the instance's lock when
        `exclusive`, else (tokenization: the vocabulary is read-only) directly once the instance is loaded."""
        instance = self._instances.get(key)
        starts_now = (
            instance is not None
            and instance.load.done()
            and not instance.load.cancelled()
            and instance.load.exception() is None
            and (not exclusive or (not instance.lock.locked() and not self._running.locked()))
        )
        if not starts_now and self._waiting >= self.queue_size:
            raise QueueFullError(
                f"{self._waiting} requests already wait for a model instance (queue size {self.queue_size})"
            )
        self._waiting += 1
        waiting, locked, running = True, False, False
        instance, future, cancel = None, None, threading.Event()
        try:
            if key not in self._instances:
                # a file that cannot load must not evict a working instance
                await asyncio.to_thread(LlamaGenerator.check_files, key.model_path, key.adapter_path)
            instance = await self._checkout(key)
            generator = await asyncio.shield(instance.load)
            if exclusive:
                await instance.lock.acquire()
                locked = True
                await self._running.acquire()
                running = True
            self._waiting -= 1
            waiting = False
            if not exclusive:
                return call(generator, cancel)
            future = asyncio.get_running_loop().run_in_executor(None, call, generator, cancel)
            return await asyncio.shield(future)
        finally:
            if waiting:
                self._waiting -= 1

            def release(_: object = None) -> None:
                if running:
                    self._running.release()
                if locked:
                    instance.lock.release()
                if instance is not None:
                    self._release(instance)

            if future is not None and not future.done():
                # cancelled while llama.cpp still runs: keep the instance locked until the thread returns
                cancel.set()
                future.add_done_callback(release)
            else:
                release()

    async def _checkout(self, key: ModelKey) -> _Instance:
        """The instance for `key`, created (and loading) if needed; counts the caller as a user."""
        while True:
            instance = self._instances.get(key)
            if instance is not None:
                self._instances.move_to_end(key)
                break
            if len(self._instances) < self.max_instances or self._evict_one():
                instance = _Instance(key, asyncio.ensure_future(asyncio.to_thread(self._load, key)))
                instance.load.add_done_callback(lambda f, i=instance: self._forget_failed(i, f))
                self._instances[key] = instance
                break
            self._changed.clear()
            await self._changed.wait()
        instance.users += 1
        return instance

    def _load(self, key: ModelKey) -> LlamaGenerator:
        return LlamaGenerator(
            key.model_path,
            key.adapter_path,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            adapter_scale=self.adapter_scale,
        )

    def _forget_failed(self, instance: _Instance, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            if self._instances.get(instance.key) is instance:
                del self._instances[instance.key]
            self._changed.set()

    def _evict_one(self) -> bool:
        for key, instance in self._instances.items():
            if instance.users == 0:
                del self._instances[key]
                self._dispose(instance)
                return True
        return False

    def _dispose(self, instance: _Instance) -> None:
        def close(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is None:
                future.result().close()

        instance.load.add_done_callback(close)

    def _release(self, instance: _Instance) -> None:
        instance.users -= 1
        self._changed.set()

    async def evict(self, model_path: Path | str, adapter_path: Path | str | None = None) -> bool:
        """Drop an instance once nobody uses it (e.g. an adapter that was rolled back)."""
        key = ModelKey.of(model_path, adapter_path)
        while (instance := self._instances.get(key)) is not None and instance.users > 0:
            self._changed.clear()
            await self._changed.wait()
        if instance is None:
            return False
        del self._instances[key]
        self._dispose(instance)
        self._changed.set()
        return True

    async def close(self) -> None:
        """Drop every instance, after the calls in flight have finished."""
        for key in list(self._instances):
            await self.evict(key.model_path, key.adapter_path)
