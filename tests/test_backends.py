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
    import openai

    failure = openai.APIConnectionError(request=None)
    backend = OpenAIBackend("http://unused/v1", "m", client=FakeClient([failure]))
    with pytest.raises(ModelError, match="APIConnectionError"):
        backend.start_session().generate([{"role": "user", "content": "hi"}])
