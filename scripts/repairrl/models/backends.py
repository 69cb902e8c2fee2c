"""Chat backends behind one interface: an OpenAI-compatible endpoint, in-process transformers, and a script.

A backend opens one `ChatSession` per episode. `session.generate(messages)` gets the whole conversation so far and
returns the next assistant turn; the session keeps the episode's token trace (token ids, loss mask, logprobs).

Token-in, token-out: the in-process session and the token-endpoint session (vLLM's `/v1/completions` with token-id
prompts) never re-render the conversation from text. They append the rendered prompt once, then exactly the ids
the model sampled, then only the rendered new tool-result turns (`ConversationTokens`). Re-rendering would silently
change the tokens trained on (templates that drop earlier `<think>` blocks, text that re-tokenizes differently), so
the ids GRPO trains on are the ids the model produced. The chat-endpoint session (`OpenAIBackend`) can only check
the server's re-rendering and falls back to a text-only trace when it differs: fine for evaluation, not for GRPO.

A server that cannot be reached raises `EndpointUnavailableError`: an infrastructure failure, not an episode's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

# Trace sources, from most to least trustworthy for training.
INPROCESS, ENDPOINT, TEXT_ONLY = "inprocess", "endpoint", "text_only"


class ModelError(RuntimeError):
    """The model backend failed (the request was refused, generation crashed); the episode ends."""


class EndpointUnavailableError(ModelError):
    """The model server cannot be reached or keeps failing (connection refused, it died, 5xx after retries).

    Not the episode's fault: the stage stops without recording the episode, so that a rerun (SLURM's retry of the
    job) runs it again against a working server instead of counting it as unresolved.
    """


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int | None = None


@dataclass
class ModelTurn:
    content: str
    tool_calls: list[dict] | None  # native OpenAI-format calls, when the backend parsed them
    finish_reason: str  # "stop" or "length"
    context_tokens: int  # prompt + completion of this call: the conversation's length in tokens so far
    completion_tokens: int


@dataclass
class TokenTrace:
    """One episode's tokens. `logprobs` is aligned with `token_ids` (0.0 where `loss_mask` is 0)."""

    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    source: str = TEXT_ONLY

    def extend(self, ids: Sequence[int], mask: int, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([mask] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


class ChatSession(Protocol):
    trace: TokenTrace

    def generate(self, messages: list[dict], max_new_tokens: int | None = None) -> ModelTurn:
        """The next assistant turn of `messages`, at most `max_new_tokens` (and the sampling limit) long."""
        ...

    def close(self) -> None: ...


class ChatBackend(Protocol):
    model_name: str

    def start_session(self, tools: list[dict] | None = None, seed: int | None = None) -> ChatSession: ...

    def close(self) -> None: ...


# --- scripted ---------------------------------------------------------------------------------------------------


class ScriptedBackend:
    """Replays a fixed list of assistant messages (text, or dicts with content/tool_calls) in every session."""

    def __init__(self, script: Sequence[str | dict], model_name: str = "scripted"):
        self.script = list(script)
        self.model_name = model_name

    def start_session(self, tools: list[dict] | None = None, seed: int | None = None) -> _ScriptedSession:
        return _ScriptedSession(self.script)

    def close(self) -> None:
        pass


class _ScriptedSession:
    def __init__(self, script: list[str | dict]):
        self._script = iter(script)
        self.trace = TokenTrace(source=TEXT_ONLY)
        self._context = 0

    def generate(self, messages: list[dict], max_new_tokens: int | None = None) -> ModelTurn:
        step = next(self._script, "I am done.")
        message = {"content": step} if isinstance(step, str) else step
        content = message.get("content") or ""
        # A rough token count (4 characters a token) so the token limits mean something in tests.
        self._context = sum(len(str(m.get("content") or "")) for m in messages) // 4 + len(content) // 4
        return ModelTurn(content, message.get("tool_calls"), "stop", self._context, len(content) // 4)

    def close(self) -> None:
        pass


# --- OpenAI-compatible endpoint ------------------------------------------------------------------------------------


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (`vllm serve`, hosted APIs), with the client's retries and backoff.

    From vLLM (`return_token_ids`, `logprobs`) the session stitches a token trace: each prompt must extend the
    previous prompt + completion token for token, else the server re-rendered the history differently and the
    trace is marked text-only rather than recorded wrong.
    """

    def __init__(self, base_url: str, model_name: str | None = None, sampling: SamplingParams = SamplingParams(),
                 api_key: str = "EMPTY", max_retries: int = 6, timeout_s: float = 600.0, native_tools: bool = True,
                 request_token_ids: bool = True, client: Any = None):
        if client is None:
            # The client retries connection errors, 408/409/429 and 5xx with exponential backoff and jitter.
            client = openai_client(base_url, api_key, max_retries, timeout_s)
        self.client = client
        self.sampling = sampling
        self.native_tools = native_tools
        self.request_token_ids = request_token_ids
        self.model_name = model_name or served_model(self.client)

    def start_session(self, tools: list[dict] | None = None, seed: int | None = None) -> _OpenAISession:
        return _OpenAISession(self, tools if self.native_tools else None, seed)

    def close(self) -> None:
        pass


def openai_client(base_url: str, api_key: str, max_retries: int, timeout_s: float) -> Any:
    """An OpenAI client whose responses are always valid UTF-8.

    A server that emits invalid UTF-8 (a model's broken byte-level tokens, a proxy cutting a character) would make
    the client's JSON decoding raise a bare UnicodeDecodeError that ends the episode with its conversation lost;
    replacing the bad bytes with U+FFFD keeps the reply, as the model said it, minus what was never text.
    """
    import openai

    try:  # openai >= 3 ships its own fork of httpx
        import httpx2 as httpx
    except ImportError:
        import httpx

    class ReplacingInvalidUtf8(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            body = response.read()
            try:
                body.decode("utf-8")
                return response
            except UnicodeDecodeError:
                headers = [(k, v) for k, v in response.headers.multi_items()
                           if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]
                return httpx.Response(response.status_code, headers=headers, request=request,
                                      content=body.decode("utf-8", "replace").encode("utf-8"))

    # openai's own client class keeps its defaults (connection limits, redirects); only the transport is ours.
    http_client = openai.DefaultHttpxClient(transport=ReplacingInvalidUtf8())
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s,
                         http_client=http_client)


def served_model(client: Any) -> str:
    """The first model an OpenAI-compatible endpoint lists."""
    try:
        return client.models.list().data[0].id
    except Exception as error:
        raise EndpointUnavailableError(f"could not list the endpoint's models ({error}); is the server up? Or pass "
                                       "the model name explicitly") from error


def _extra(obj: Any, name: str) -> Any:
    """A field the OpenAI types do not declare (vLLM's token ids), wherever pydantic kept it."""
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


class _OpenAISession:
    def __init__(self, backend: OpenAIBackend, tools: list[dict] | None, seed: int | None):
        self.backend = backend
        self.tools = tools
        self.seed = seed if seed is not None else backend.sampling.seed
        self.trace = TokenTrace(source=ENDPOINT if backend.request_token_ids else TEXT_ONLY)

    def generate(self, messages: list[dict], max_new_tokens: int | None = None) -> ModelTurn:
        import openai

        sampling = self.backend.sampling
        request: dict[str, Any] = {
            "model": self.backend.model_name, "messages": messages, "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": min(max_new_tokens or sampling.max_new_tokens, sampling.max_new_tokens),
        }
        if self.seed is not None:
            request["seed"] = self.seed
        if self.tools:
            request["tools"] = self.tools
        if self.trace.source == ENDPOINT:
            request["logprobs"] = True
            request["extra_body"] = {"return_token_ids": True}
        try:
            response = self.backend.client.chat.completions.create(**request)
        except openai.OpenAIError as error:
            raise endpoint_error(error) from error
        choice = response.choices[0]
        message = choice.message
        tool_calls = [call.model_dump() for call in message.tool_calls] if message.tool_calls else None
        usage = response.usage
        completion_tokens = usage.completion_tokens if usage else 0
        context_tokens = usage.total_tokens if usage else 0
        if self.trace.source == ENDPOINT:
            self._record_tokens(response, choice)
        finish = "length" if choice.finish_reason == "length" else "stop"
        return ModelTurn(message.content or "", tool_calls, finish, context_tokens, completion_tokens)

    def _record_tokens(self, response: Any, choice: Any) -> None:
        prompt_ids = _extra(response, "prompt_token_ids") or _extra(choice, "prompt_token_ids")
        completion_ids = _extra(choice, "token_ids")
        content_logprobs = getattr(getattr(choice, "logprobs", None), "content", None) or []
        logprobs = [entry.logprob for entry in content_logprobs]
        trace = self.trace
        if (prompt_ids is None or completion_ids is None or len(logprobs) != len(completion_ids)
                or prompt_ids[: len(trace.token_ids)] != trace.token_ids):
            # The server does not offer token ids, or it re-rendered the history into other tokens.
            self.trace = TokenTrace(source=TEXT_ONLY)
            return
        trace.extend(prompt_ids[len(trace.token_ids):], 0)
        trace.extend(completion_ids, 1, logprobs)

    def close(self) -> None:
        pass  # the client's connections belong to the backend and outlive the episode


def endpoint_error(error: Exception) -> ModelError:
    """An OpenAI client error as a ModelError; the server's absence or collapse as EndpointUnavailableError."""
    import openai

    message = f"{type(error).__name__}: {error}"
    # The client has already retried these with backoff (connection errors, timeouts, 5xx).
    if isinstance(error, openai.APIConnectionError) or (
            isinstance(error, openai.APIStatusError) and error.status_code >= 500):
        return EndpointUnavailableError(message)
    return ModelError(message)


# --- token-in/token-out rendering, shared by the in-process and the token-endpoint backends ----------------------


class ConversationTokens:
    """One chat template's tokens for an episode: the first prompt rendered once, later only the new turns.

    New turns are rendered as the text a neutral [system, user] conversation gains when they are appended, so the
    real history, with whatever the template would do to it, is never rendered again. `tools` are rendered the way
    the template renders them (Qwen3: a <tools> block in the system turn), as a chat endpoint does when a request
    carries them: training and evaluation prompts are then the same.
    """

    def __init__(self, tokenizer: Any, eos_ids: set[int], tools: list[dict] | None = None):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.tools = tools or None
        # Rust tokenizers are not safe to share between threads; every tokenizer call goes through this lock.
        self.lock = threading.Lock()
        self._eos_text, self._after_eos, self._base_text = self._template_landmarks()

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=self.tools, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _template_landmarks(self) -> tuple[str, str, str]:
        """The end-of-turn text, what the template writes after it, and a neutral conversation to extend."""
        base = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        eos_text = self.tokenizer.decode([min(self.eos_ids)])
        closed = self.render([*base, {"role": "assistant", "content": "a"}], generation_prompt=False)
        at = closed.rfind(eos_text)
        after_eos = closed[at + len(eos_text):] if at >= 0 else ""
        return eos_text, after_eos, self.render(base, generation_prompt=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        with self.lock:
            return self.encode(self.render(messages, generation_prompt=True))

    def continuation_ids(self, new_messages: list[dict], ended_with_eos: bool) -> list[int]:
        with self.lock:
            extended = self.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                    *new_messages], generation_prompt=True)
            if not extended.startswith(self._base_text):
                raise ModelError("the chat template does not render a conversation by appending turns, so new "
                                 "turns cannot be tokenized on their own; use a template that does")
            closing = "" if ended_with_eos else self._eos_text  # a turn cut at max_new_tokens is closed here
            return self.encode(closing + self._after_eos + extended[len(self._base_text):])

    def decode(self, ids: list[int]) -> str:
        with self.lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)


# (prompt ids, most new tokens, seed) -> (sampled ids, their logprobs, "stop" or "length")
SampleTokens = Callable[[list[int], int, "int | None"], tuple[list[int], list[float], str]]


class _TokenSession:
    """An episode whose trace is built from ids, never from re-rendered text.

    The rendered prompt once, then exactly the ids the model sampled, then only the rendered new tool-result
    turns: a history that would re-tokenize differently (a `<think>` block a template drops, text that splits
    into other tokens) cannot change what was trained on.
    """

    def __init__(self, renderer: ConversationTokens, sample: SampleTokens, max_new_tokens: int, source: str,
                 seed: int | None = None, on_close: Callable[[], None] | None = None):
        self.renderer = renderer
        self.sample = sample
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.trace = TokenTrace(source=source)
        self._messages_seen = 0  # messages already in the trace, counting the assistant turns it generated
        self._on_close = on_close
        self._closed = False

    def generate(self, messages: list[dict], max_new_tokens: int | None = None) -> ModelTurn:
        renderer = self.renderer
        if not self.trace.token_ids:
            self.trace.extend(renderer.prompt_ids(messages), 0)
        else:
            if messages[self._messages_seen - 1].get("role") != "assistant":
                raise ModelError("the conversation must go on from the assistant turn this session generated")
            ended = self.trace.token_ids[-1] in renderer.eos_ids
            self.trace.extend(renderer.continuation_ids(messages[self._messages_seen:], ended), 0)
        limit = min(max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        ids, logprobs, finish_reason = self.sample(self.trace.token_ids, limit, self.seed)
        self.trace.extend(ids, 1, logprobs)
        self._messages_seen = len(messages) + 1  # the caller appends the turn returned here
        return ModelTurn(renderer.decode(ids), None, finish_reason, len(self.trace.token_ids), len(ids))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close()


def _renderer_for(cache: dict, lock: threading.Lock, tokenizer: Any, eos_ids: set[int],
                  tools: list[dict] | None) -> ConversationTokens:
    import json

    key = json.dumps(tools, sort_keys=True)
    with lock:
        if key not in cache:
            cache[key] = ConversationTokens(tokenizer, eos_ids, tools)
        return cache[key]


# --- vLLM's completions endpoint with token-id prompts --------------------------------------------------------


class TokenEndpointBackend:
    """Token ids in and out through vLLM's OpenAI-compatible `/v1/completions` (`vllm serve`, `trl vllm-serve`).

    The prompt is sent as token ids and the sampled ids come back (`return_token_ids`, vLLM >= 0.10.2) with their
    logprobs, so the trace is stitched exactly as the in-process backend stitches it: GRPO trains on the ids the
    server sampled, whatever their text would re-tokenize to. Tool calls are read from the text (hermes tags).
    """

    def __init__(self, base_url: str, tokenizer: Any, sampling: SamplingParams = SamplingParams(),
                 model_name: str | None = None, eos_ids: Sequence[int] | None = None, api_key: str = "EMPTY",
                 max_retries: int = 6, timeout_s: float = 600.0, client: Any = None):
        if client is None:
            client = openai_client(base_url, api_key, max_retries, timeout_s)
        self.client = client
        self.tokenizer = tokenizer
        self.sampling = sampling
        eos = list(eos_ids) if eos_ids else [tokenizer.eos_token_id]
        self.eos_ids = set(eos)
        self._renderers: dict[str, ConversationTokens] = {}
        self._renderers_lock = threading.Lock()
        self.model_name = model_name or served_model(self.client)

    def start_session(self, tools: list[dict] | None = None, seed: int | None = None) -> _TokenSession:
        renderer = _renderer_for(self._renderers, self._renderers_lock, self.tokenizer, self.eos_ids, tools)
        return _TokenSession(renderer, self._complete, self.sampling.max_new_tokens, ENDPOINT,
                             seed=seed if seed is not None else self.sampling.seed)

    def _complete(self, prompt_ids: list[int], max_new_tokens: int, seed: int | None
                  ) -> tuple[list[int], list[float], str]:
        import openai

        sampling = self.sampling
        request: dict[str, Any] = {
            "model": self.model_name, "prompt": list(prompt_ids), "max_tokens": max_new_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "logprobs": 1,
            "extra_body": {"return_token_ids": True},
        }
        if seed is not None:
            request["seed"] = seed
        try:
            response = self.client.completions.create(**request)
        except openai.OpenAIError as error:
            raise endpoint_error(error) from error
        choice = response.choices[0]
        ids = _extra(choice, "token_ids")
        logprobs = getattr(getattr(choice, "logprobs", None), "token_logprobs", None)
        if ids is None or logprobs is None or len(logprobs) != len(ids):
            raise ModelError("the server returned no token ids with logprobs for a token-id prompt; token-in/"
                             "token-out needs vLLM >= 0.10.2 (`return_token_ids`) and `logprobs`")
        return list(ids), [float(lp) for lp in logprobs], "length" if choice.finish_reason == "length" else "stop"

    def close(self) -> None:
        pass


# --- in-process transformers, batched across episodes -----------------------------------------------------------


@dataclass
class _SessionKV:
    """The keys and values an episode's last generate call computed, kept for its next turn.

    `layers[i]` is layer i's (keys, values), each (kv heads, len(ids), head dim): the tokens `ids`, which are the
    last prompt and the ids sampled after it but the last one (generate samples it and stops before feeding it).
    """

    ids: list[int] = field(default_factory=list)
    layers: list[tuple[Any, Any]] = field(default_factory=list)

    def reusable(self, prompt_ids: list[int]) -> int:
        """How many leading tokens of `prompt_ids` these keys and values hold (at least one token is left to feed).

        A session's next prompt extends the last one token for token, so this is normally all of `ids`; a prompt
        that diverges reuses only the common prefix (the cache is cropped there).
        """
        if not self.layers:
            return 0
        return _common_length(self.ids, prompt_ids, len(prompt_ids) - 1)

    def clear(self) -> None:
        self.ids, self.layers = [], []


@dataclass
class _Request:
    prompt_ids: list[int]
    max_new_tokens: int
    kv: _SessionKV | None = None  # the session's cache, when the backend reuses it across turns
    done: threading.Event = field(default_factory=threading.Event)
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "stop"
    error: BaseException | None = None


class InProcessBackend:
    """transformers generation in this process, for CPU runs and the embedded model.

    Episodes run in threads; each `generate` is queued, and one batcher thread left-pads every waiting request
    into one `model.generate` call, so N concurrent episodes cost about one generation each step, not N. The
    batcher waits up to `batch_window_s` for the other open sessions to ask, since they are usually just
    finishing a tool call.

    Logprobs are log-softmax of the raw logits divided by the temperature, as TRL's GRPO computes them (top-p
    truncation is not reflected). Sampling within a batch draws from one generator seeded per generate call, so
    a seeded run repeats exactly only with the same batch composition.

    KV cache across turns (`reuse_kv_cache`): a turn's prompt is the last prompt, the sampled ids and the new tool
    turns, so each session keeps the keys and values its last generate call computed and the next call feeds only
    what is new. In a batch every row feeds the same number of trailing tokens (the longest new part): a row with
    less that is new recomputes a few cached tokens, a row with no cache (a first turn) feeds its whole prompt.
    Positions come from the attention mask, so a row's cached keys are valid whatever padding its batch had. The
    tokens, and so the trace, are the same as without reuse; it costs one cache per open session in memory (a
    model whose cache is not a plain per-layer DynamicCache, e.g. sliding-window or linear-attention layers,
    always prefills in full).

    Across sessions, too: first turns begin with the same system prompt and tool list (and a GRPO group's with
    the same task), so the common prefix of a batch's first turns is prefilled once, in a forward pass of its
    own, and every first turn starts from it; the last such prefix is kept for first turns of later batches.
    """

    def __init__(self, model: Any, tokenizer: Any, sampling: SamplingParams = SamplingParams(),
                 model_name: str = "inprocess", max_batch_size: int = 16, batch_window_s: float = 0.05,
                 reuse_kv_cache: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.reuse_kv_cache = reuse_kv_cache
        self.prefilled_tokens = 0  # prompt tokens fed to the model, cached ones not counted
        self._shared_prefix = _SessionKV()  # the last common prefix of first turns (see _share_prompt_prefix)
        self.generate_calls = 0
        self.requests = 0
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
            else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._renderers: dict[str, ConversationTokens] = {}
        self._renderers_lock = threading.Lock()
        self._plain = self._renderer(None)
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._open_sessions = 0
        self._closed = False
        self._batcher = threading.Thread(target=self._batch_loop, name="generate-batcher", daemon=True)
        self._batcher.start()

    @classmethod
    def from_manifest(cls, manifest_or_dir: str, sampling: SamplingParams = SamplingParams(), device: str = "cpu",
                      **kwargs: Any) -> InProcessBackend:
        from repairrl.models.loading import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(manifest_or_dir, device=device)
        model.eval()
        return cls(model, tokenizer, sampling, model_name=kwargs.pop("model_name", str(manifest_or_dir)), **kwargs)

    def _renderer(self, tools: list[dict] | None) -> ConversationTokens:
        return _renderer_for(self._renderers, self._renderers_lock, self.tokenizer, self.eos_ids, tools)

    def _encode(self, text: str) -> list[int]:
        return self._plain.encode(text)

    # Sessions and batching -------------------------------------------------------------------------------------

    def start_session(self, tools: list[dict] | None = None, seed: int | None = None) -> _TokenSession:
        with self._cond:
            self._open_sessions += 1
        kv = _SessionKV() if self.reuse_kv_cache else None
        return _TokenSession(self._renderer(tools), partial(self._sample, kv=kv), self.sampling.max_new_tokens,
                             INPROCESS, on_close=partial(self._end_session, kv))

    def _sample(self, prompt_ids: list[int], max_new_tokens: int, seed: int | None, kv: _SessionKV | None = None
                ) -> tuple[list[int], list[float], str]:
        request = self._submit(prompt_ids, max_new_tokens, kv)
        return request.ids, request.logprobs, request.finish_reason

    def _end_session(self, kv: _SessionKV | None = None) -> None:
        if kv is not None:
            kv.clear()  # the session's turns are over: its cache is memory only
        with self._cond:
            self._open_sessions -= 1
            self._cond.notify_all()

    def _submit(self, prompt_ids: list[int], max_new_tokens: int, kv: _SessionKV | None = None) -> _Request:
        request = _Request(list(prompt_ids), max_new_tokens, kv)
        with self._cond:
            if self._closed:
                raise ModelError("the in-process backend is closed")
            self._pending.append(request)
            self.requests += 1
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise ModelError(f"generation failed: {type(request.error).__name__}: {request.error}") from request.error
        return request

    def _batch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                deadline = time.monotonic() + self.batch_window_s
                while len(self._pending) < min(self._open_sessions, self.max_batch_size) and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._pending[: self.max_batch_size]
                del self._pending[: self.max_batch_size]
            try:
                self._generate(batch)
            except BaseException as error:  # noqa: BLE001 - handed to every waiting episode, which ends it
                for request in batch:
                    request.error = error
            for request in batch:
                request.done.set()

    def _generate(self, batch: list[_Request]) -> None:
        import torch

        width = max(len(r.prompt_ids) for r in batch)
        self._share_prompt_prefix(batch)
        reused = [r.kv.reusable(r.prompt_ids) if r.kv is not None else 0 for r in batch]
        fed = max(len(r.prompt_ids) - n for r, n in zip(batch, reused, strict=True))  # trailing tokens every row feeds
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch])
        attention_mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch])
        device = self.model.device
        cache_name = _generate_cache_argument()
        past = {cache_name: self._batch_cache(batch, width - fed, fed, device)} if fed < width else {}
        self.prefilled_tokens += len(batch) * fed
        options = self._decoding_options(batch)
        if self.sampling.seed is not None:
            torch.manual_seed(self.sampling.seed + self.generate_calls)
        self.generate_calls += 1
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                max_new_tokens=max(r.max_new_tokens for r in batch), pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos_ids), return_dict_in_generate=True, output_logits=True,
                # A trainer's model has the KV cache switched off for training; without it every new token
                # recomputes the whole conversation.
                use_cache=True, **options, **past,
            )
            new_tokens = output.sequences[:, width:]
            scale = self.sampling.temperature if self.sampling.temperature > 0 else 1.0
            step_logprobs = torch.stack([
                torch.log_softmax(logits.float() / scale, dim=-1).gather(-1, new_tokens[:, t: t + 1]).squeeze(-1)
                for t, logits in enumerate(output.logits)
            ], dim=1)
        for row, request in enumerate(batch):
            ids = new_tokens[row].tolist()[: request.max_new_tokens]
            end = next((i + 1 for i, token in enumerate(ids) if token in self.eos_ids), None)
            request.finish_reason = "stop" if end is not None else "length"
            request.ids = ids[:end] if end is not None else ids
            request.logprobs = step_logprobs[row, : len(request.ids)].tolist()
        self._keep_session_caches(batch, width, getattr(output, cache_name, None))

    # Below this a shared prefix saves less than its own forward pass costs.
    MIN_SHARED_PREFIX = 32

    def _share_prompt_prefix(self, batch: list[_Request]) -> None:
        """Start the batch's first turns (rows with an empty cache) from the keys and values of their common
        prefix: the kept one when it covers them, else one computed now from the longest prefix they share."""
        first_turns = [r for r in batch if r.kv is not None and not r.kv.layers]
        if not first_turns:
            return
        shared = self._shared_prefix
        common = min(len(r.prompt_ids) - 1 for r in first_turns)  # one token is left for generate to feed
        for request in first_turns:
            common = _common_length(first_turns[0].prompt_ids, request.prompt_ids, common)
        kept = min(_common_length(shared.ids, r.prompt_ids, len(shared.ids)) for r in first_turns)
        if len(first_turns) > 1 and common >= self.MIN_SHARED_PREFIX and common > kept:
            computed = self._prefix_cache(first_turns[0].prompt_ids[:common])
            if computed is not None:
                self._shared_prefix = shared = computed
        for request in first_turns:
            used = min(_common_length(shared.ids, request.prompt_ids, len(shared.ids)), len(request.prompt_ids) - 1)
            if used >= self.MIN_SHARED_PREFIX:
                request.kv.ids = shared.ids[:used]
                # Views: the batch's cache is assembled from copies (_batch_cache), and the session's own cache
                # is replaced by copies after the call (_keep_session_caches).
                request.kv.layers = [(keys[:, :used], values[:, :used]) for keys, values in shared.layers]

    def _prefix_cache(self, ids: list[int]) -> _SessionKV | None:
        """The keys and values of `ids` from one forward pass, or None for a model whose cache is not plain."""
        import torch

        with torch.inference_mode():
            output = self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=True)
        cache = getattr(output, _generate_cache_argument(), None)
        if not _holds_every_position(cache):
            return None
        self.prefilled_tokens += len(ids)
        return _SessionKV(list(ids), [(layer.keys[0].clone(), layer.values[0].clone()) for layer in cache.layers])

    def _decoding_options(self, batch: list[_Request]) -> dict[str, Any]:
        """`generate`'s sampling arguments for a batch: greedy at temperature 0."""
        sampling = self.sampling
        options: dict[str, Any] = {"do_sample": sampling.temperature > 0}
        if sampling.temperature > 0:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        return options

    @staticmethod
    def _batch_cache(batch: list[_Request], past: int, fed: int, device: Any) -> Any:
        """The rows' kept caches as one left-padded DynamicCache of `past` positions, before the `fed` inputs.

        A row's tokens end at the batch's last column, so its first len(prompt) - fed tokens are its cached part;
        pad columns stay zero (masked out).
        """
        import torch
        from transformers import DynamicCache

        sample = next(r.kv.layers for r in batch if r.kv is not None and r.kv.layers)
        layers = []
        for layer, (key_sample, value_sample) in enumerate(sample):
            heads = key_sample.shape[0]
            keys = torch.zeros((len(batch), heads, past, key_sample.shape[-1]), dtype=key_sample.dtype, device=device)
            values = torch.zeros((len(batch), heads, past, value_sample.shape[-1]), dtype=value_sample.dtype,
                                 device=device)
            for row, request in enumerate(batch):
                used = len(request.prompt_ids) - fed  # <= the tokens its cache holds, by the choice of `fed`
                if used > 0:
                    key, value = request.kv.layers[layer]
                    keys[row, :, past - used:] = key[:, :used]
                    values[row, :, past - used:] = value[:, :used]
            layers.append((keys, values))
        return DynamicCache(layers)

    @staticmethod
    def _keep_session_caches(batch: list[_Request], width: int, cache: Any) -> None:
        """Keep each session's prompt + sampled ids (but the last, never fed) from the batch's cache, unpadded."""
        plain = _holds_every_position(cache)
        for row, request in enumerate(batch):
            if request.kv is None:
                continue
            if not plain or not request.ids:
                request.kv.clear()
                continue
            start, end = width - len(request.prompt_ids), width + len(request.ids) - 1
            request.kv.ids = request.prompt_ids + request.ids[:-1]
            # Copies, not views: a view would keep the whole batch's cache alive for as long as any session.
            request.kv.layers = [(layer.keys[row, :, start:end].clone(), layer.values[row, :, start:end].clone())
                                 for layer in cache.layers]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._batcher.join(timeout=60)


def _holds_every_position(cache: Any) -> bool:
    """Whether `cache` is a plain per-layer DynamicCache, whose keys and values can be cut per row and reused;
    other layer kinds (sliding windows, linear attention) do not hold every position."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)


def _common_length(first: list[int], second: list[int], limit: int) -> int:
    """How many leading tokens of `first` and `second` are equal, counting at most `limit`."""
    limit = max(0, min(limit, len(first), len(second)))
    if first[:limit] == second[:limit]:  # the usual case, at C speed
        return limit
    return next(i for i in range(limit) if first[i] != second[i])


def _generate_cache_argument() -> str:
    """The name of `generate`'s cache argument and output field: transformers 5 renamed `past_key_values` to
    `cache` (the old name still works there, with a warning)."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def make_backend(kind: str, model: str, sampling: SamplingParams = SamplingParams(), **kwargs: Any) -> ChatBackend:
    """`inprocess`: `model` is a prepared model (manifest dir); `openai`: `model` is the endpoint's base URL."""
    if kind == "inprocess":
        return InProcessBackend.from_manifest(model, sampling, **kwargs)
    if kind == "openai":
        return OpenAIBackend(model, sampling=sampling, **kwargs)
    raise ValueError(f"unknown model backend {kind!r}; use 'inprocess' or 'openai'")
