"""Model backends: token-in/token-out traces of the embedded model, batching across episodes, the endpoint."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from repairrl.agent.loop import AgentConfig, run_episode
from repairrl.models.backends import (
    ENDPOINT,
    TEXT_ONLY,
    InProcessBackend,
    ModelError,
    OpenAIBackend,
    SamplingParams,
)
from repairrl.records import validate_record

from .test_agent import SubprocessSandbox

# The real system prompt costs a long prefill per turn on a shared CPU; the token trace does not depend on it.
SHORT_PROMPT = "Fix the bug in the repository at {repo_path}. Call tools as <tool_call>{{json}}</tool_call>."


@pytest.fixture(scope="module")
def embedded(embedded_model_dir):
    backend = InProcessBackend.from_manifest(str(embedded_model_dir), SamplingParams(temperature=0.8, max_new_tokens=64,
                                                                           seed=0))
    yield backend
    backend.close()


def generated_spans(mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for index, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = index
        elif not bit and start is not None:
            spans.append((start, index))
            start = None
    return spans


def test_embedded_model_episode_records_a_consistent_token_trace(embedded, buggy_repo):
    repo, task = buggy_repo
    record = run_episode(task, embedded, SubprocessSandbox(repo), repo,
                         AgentConfig(max_tool_calls=2, max_tokens=4096, system_prompt=SHORT_PROMPT))
    validate_record(record, "trajectory")
    ids, mask, logprobs = record["token_ids"], record["loss_mask"], record["logprobs"]
    assert record["token_source"] == "inprocess"
    assert len(ids) == len(mask) == len(logprobs) == record["tokens"]["context"]
    spans = generated_spans(mask)
    assistants = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    assert len(spans) == len(assistants) == record["tokens"]["turns"]
    tokenizer = embedded.tokenizer
    for (start, end), content in zip(spans, assistants, strict=True):
        assert tokenizer.decode(ids[start:end], skip_special_tokens=True) == content
        assert 0 < end - start <= 64
        assert all(lp <= 0 for lp in logprobs[start:end]) and any(lp < 0 for lp in logprobs[start:end])
    assert all(lp == 0.0 for lp, bit in zip(logprobs, mask, strict=True) if not bit)
    prompt = tokenizer.apply_chat_template(record["messages"][:2], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids[: spans[0][0]]) == prompt
    assert record["stop_reason"] in ("no_tool_call", "max_tool_calls", "max_tokens")


def test_tool_turns_are_appended_as_tokens_not_rerendered(embedded):
    tokenizer = embedded.tokenizer
    session = embedded.start_session()
    try:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
        first = session.generate(messages, max_new_tokens=8)
        messages += [{"role": "assistant", "content": first.content},
                     {"role": "tool", "tool_call_id": "call_0", "content": "hello from the tool"}]
        second = session.generate(messages, max_new_tokens=8)
    finally:
        session.close()
    trace = session.trace
    first_span, second_span = generated_spans(trace.loss_mask)
    assert second.context_tokens == len(trace.token_ids) == second_span[1]
    between = tokenizer.decode(trace.token_ids[first_span[1]: second_span[0]])
    closing = "" if first.finish_reason == "stop" else "<|im_end|>"  # a cut turn is closed with a mask-0 token
    assert between == f"{closing}\n<|im_start|>tool\nhello from the tool<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(trace.token_ids[slice(*second_span)], skip_special_tokens=True) == second.content


def test_concurrent_episodes_share_generate_calls(embedded, buggy_repo, tmp_path):
    repo, task = buggy_repo
    # The same weights with shorter turns: batching does not depend on the turn length.
    backend = InProcessBackend(embedded.model, embedded.tokenizer, SamplingParams(temperature=0.8, max_new_tokens=12))
    records = []
    copies = []
    for number in range(4):
        copy = tmp_path / f"copy{number}"
        SubprocessSandbox(tmp_path).run(f"git clone -q {repo} {copy}")
        copies.append(copy)

    def one(copy: Path) -> None:
        records.append(run_episode(task, backend, SubprocessSandbox(copy), copy,
                                   AgentConfig(max_tool_calls=2, max_tokens=2048, system_prompt=SHORT_PROMPT)))

    threads = [threading.Thread(target=one, args=(copy,)) for copy in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    backend.close()
    turns = sum(r["tokens"]["turns"] for r in records)
    assert len(records) == 4 and turns >= 4
    assert backend.requests == turns and backend.generate_calls < turns


def scripted_tool_episode(backend: InProcessBackend, tool_outputs: list[str]) -> tuple[list, list[str]]:
    """One session driven by a scripted tool environment: each model turn is answered with the next tool output."""
    session = backend.start_session()
    messages = [{"role": "system", "content": "You fix bugs. Use the shell tool."},
                {"role": "user", "content": "add(2, 3) returns -1 instead of 5 in calc.py."}]
    replies = []
    try:
        for number, output in enumerate([*tool_outputs, None]):
            turn = session.generate(messages)
            replies.append(turn.content)
            if output is not None:
                messages += [{"role": "assistant", "content": turn.content},
                             {"role": "tool", "tool_call_id": f"call_{number}", "content": output}]
    finally:
        session.close()
    return session.trace, replies


TOOL_OUTPUTS = ["def add(a, b):\n    return a - b\n", "calc.py\ntest_calc.py\n", "1 failed, 3 passed in 0.02s"]


def test_kv_cache_reuse_across_turns_keeps_the_trace_identical(embedded):
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    traces, prefilled = {}, {}
    for reuse in (True, False):
        backend = InProcessBackend(embedded.model, embedded.tokenizer, greedy, reuse_kv_cache=reuse)
        try:
            traces[reuse], _ = scripted_tool_episode(backend, TOOL_OUTPUTS)
        finally:
            backend.close()
        prefilled[reuse] = backend.prefilled_tokens
    reused, full = traces[True], traces[False]
    assert len(generated_spans(full.loss_mask)) == 4
    assert reused.token_ids == full.token_ids and reused.loss_mask == full.loss_mask
    assert reused.logprobs == pytest.approx(full.logprobs, abs=1e-4)
    # Without reuse every turn prefills the whole conversation. With it only the first turn does; a later turn
    # feeds the last sampled token (never fed during generation) and the new tool turn.
    turns = len(generated_spans(full.loss_mask))
    assert prefilled[True] == len(full.token_ids) - sum(full.loss_mask) + turns - 1
    assert prefilled[False] > 3 * full.loss_mask.index(1)


def test_kv_cache_reuse_in_mixed_batches_matches_full_prefill(embedded):
    """Rows with caches of different lengths, a first turn beside them, and a prompt that diverges from its cache."""
    from repairrl.models.backends import _Request, _SessionKV

    tokenizer = embedded.tokenizer
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = [encode("<|im_start|>user\nCount to ten.<|im_end|>\n<|im_start|>assistant\n"),
               encode("<|im_start|>user\nName three colours, briefly please.<|im_end|>\n<|im_start|>assistant\n")]
    tool = encode("<|im_end|>\n<|im_start|>tool\nok<|im_end|>\n<|im_start|>assistant\n")
    late = encode("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n")

    def run(reuse: bool) -> list[tuple[list[int], list[float]]]:
        backend = InProcessBackend(embedded.model, embedded.tokenizer, greedy, reuse_kv_cache=reuse)
        backend.close()  # only its generate step is used here, on hand-made batches
        kvs = [_SessionKV() if reuse else None for _ in range(3)]
        results = []

        def step(rows: list[tuple[list[int], int]]) -> list[_Request]:
            batch = [_Request(prompt, 8, kvs[session]) for prompt, session in rows]
            backend._generate(batch)
            results.extend((r.ids, r.logprobs) for r in batch)
            return batch

        first = step([(prompts[0], 0), (prompts[1], 1)])
        second = step([(first[0].prompt_ids + first[0].ids + tool, 0), (late, 2),
                       (first[1].prompt_ids + first[1].ids + tool + tool, 1)])
        diverged = list(second[0].prompt_ids)
        diverged[len(prompts[0]) // 2] = encode(" seven")[0]  # an edit inside the cached part: only the prefix is reused
        step([(diverged + second[0].ids + tool, 0)])
        return results

    reused, full = run(True), run(False)
    assert [ids for ids, _ in reused] == [ids for ids, _ in full]
    for (_, reused_logprobs), (_, full_logprobs) in zip(reused, full, strict=True):
        assert reused_logprobs == pytest.approx(full_logprobs, abs=1e-4)


def test_first_turns_share_their_common_prompt_prefix_and_keep_the_tokens(embedded):
    """First turns that start alike (system prompt, tools) prefill the common part once; a later lone first turn
    starts from the kept prefix; the tokens and logprobs are those of full prefills."""
    from repairrl.models.backends import _Request, _SessionKV

    tokenizer = embedded.tokenizer
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    system = encode("<|im_start|>system\n" + SHORT_PROMPT * 3 + "<|im_end|>\n")
    questions = ["Count to ten.", "Name three colours, briefly please.", "Say hi."]
    prompts = [system + encode(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n") for q in questions]
    prefix = len(system) + len(encode("<|im_start|>user\n"))  # what every prompt shares
    assert prefix >= InProcessBackend.MIN_SHARED_PREFIX
    assert all(p[:prefix] == prompts[0][:prefix] for p in prompts) and prompts[0][prefix] != prompts[1][prefix]

    def run(reuse: bool) -> tuple[list[tuple[list[int], list[float]]], list[int]]:
        backend = InProcessBackend(embedded.model, embedded.tokenizer, greedy, reuse_kv_cache=reuse)
        backend.close()  # only its generate step is used here, on hand-made batches
        results, prefilled = [], []
        for rows in (prompts[:2], prompts[2:]):  # two first turns together, then one alone
            before = backend.prefilled_tokens
            batch = [_Request(prompt, 6, _SessionKV() if reuse else None) for prompt in rows]
            backend._generate(batch)
            results.extend((r.ids, r.logprobs) for r in batch)
            prefilled.append(backend.prefilled_tokens - before)
        return results, prefilled

    (shared, shared_prefilled), (full, full_prefilled) = run(True), run(False)
    assert [ids for ids, _ in shared] == [ids for ids, _ in full]
    for (_, shared_logprobs), (_, full_logprobs) in zip(shared, full, strict=True):
        assert shared_logprobs == pytest.approx(full_logprobs, abs=1e-4)
    longest = max(len(p) for p in prompts[:2])
    assert full_prefilled == [2 * longest, len(prompts[2])]
    # The prefix once, then each row feeds the longest unshared part; the lone first turn reuses the kept prefix.
    assert shared_prefilled == [prefix + 2 * (longest - prefix), len(prompts[2]) - prefix]


# --- the OpenAI-compatible backend, against a fake client -----------------------------------------------------


class FakeCompletions:
    def __init__(self, responses):
        self.responses, self.requests = list(responses), []

    def create(self, **request):
        from openai.types.chat import ChatCompletion

        self.requests.append(request)
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return ChatCompletion.model_validate(response)


class FakeClient:
    def __init__(self, responses):
        self.chat = type("Chat", (), {"completions": FakeCompletions(responses)})()


def completion(prompt_ids, ids, content="ok", tool_calls=None):
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": "m", "prompt_token_ids": prompt_ids,
        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(ids),
                  "total_tokens": len(prompt_ids) + len(ids)},
        "choices": [{"index": 0, "finish_reason": "stop", "token_ids": ids,
                     "message": {"role": "assistant", "content": content, "tool_calls": tool_calls},
                     "logprobs": {"content": [{"token": str(i), "logprob": -0.5, "bytes": None, "top_logprobs": []}
                                              for i in ids]}}],
    }


def test_openai_backend_stitches_endpoint_token_ids_and_detects_rerendering():
    call = {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "ls"}'}}
    client = FakeClient([completion([1, 2, 3], [7, 8], tool_calls=[call]), completion([1, 2, 3, 7, 8, 4], [9]),
                         completion([1, 2, 5], [6])])
    backend = OpenAIBackend("http://unused/v1", "m", SamplingParams(max_new_tokens=100), client=client)
    session = backend.start_session(tools=[{"type": "function"}], seed=3)
    turn = session.generate([{"role": "user", "content": "hi"}], max_new_tokens=500)
    assert turn.tool_calls[0]["function"]["name"] == "shell" and turn.context_tokens == 5
    request = client.chat.completions.requests[0]
    assert request["max_tokens"] == 100 and request["seed"] == 3 and request["logprobs"] is True
    assert request["extra_body"] == {"return_token_ids": True} and request["tools"]
    session.generate([])
    assert session.trace.source == ENDPOINT
    assert session.trace.token_ids == [1, 2, 3, 7, 8, 4, 9]
    assert session.trace.loss_mask == [0, 0, 0, 1, 1, 0, 1]
    assert session.trace.logprobs == [0, 0, 0, -0.5, -0.5, 0, -0.5]
    session.generate([])  # the server rendered the history into other tokens: not trustworthy any more
    assert session.trace.source == TEXT_ONLY and session.trace.token_ids == []


def test_openai_backend_errors_become_model_errors():
    import httpx
    import openai

    failure = openai.APIConnectionError(request=httpx.Request("POST", "http://unused/v1/chat/completions"))
    backend = OpenAIBackend("http://unused/v1", "m", client=FakeClient([failure]))
    with pytest.raises(ModelError, match="APIConnectionError"):
        backend.start_session().generate([{"role": "user", "content": "hi"}])
