"""A small OpenAI-compatible server for tests: the protocol vLLM speaks, with a scripted model behind it.

In a thread (tests drive whole episodes through real HTTP):

    with StubServer("qwen", script=[{"content": "<tool_call>...</tool_call>"}, {"content": "Done."}]) as server:
        OpenAIBackend(server.url + "/v1", ...)

Or as a process standing in for `vllm serve` (the first arguments are vLLM's, the rest are ignored):

    python tests/openai_stub.py serve MODEL --host 127.0.0.1 --port P [--served-model-name NAME] ...

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (with vLLM's `prompt_token_ids` and
`token_ids` when `return_token_ids` is asked) and POST /v1/completions (token-id prompts, as vLLM accepts them).
Chat prompts are "tokenized" one id per character of a plain rendering; `drift=True` renders earlier assistant turns
differently from what was generated (as templates that drop `<think>` do), so the prompt of a later turn does not
extend the earlier prompt + completion token for token. Completions replies are whatever ids the script gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


def char_ids(text: str) -> list[int]:
    return [ord(c) % 50000 for c in text]


class StubModel:
    """The server's state: the scripted replies (in order, the last one repeated) and every request seen."""

    def __init__(self, name: str, script: list[dict] | None = None, drift: bool = False):
        self.name = name
        self.script = list(script or [{"content": "I am done."}])
        self.drift = drift
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.served = 0

    def next_reply(self) -> dict:
        with self.lock:
            reply = self.script[min(self.served, len(self.script) - 1)]
            self.served += 1
            return reply

    def render(self, messages: list[dict]) -> str:
        parts = []
        for index, message in enumerate(messages):
            content = str(message.get("content") or "")
            if self.drift and message["role"] == "assistant" and index < len(messages) - 1:
                content = content.strip() + " "  # not what was generated: re-rendered differently
            parts.append(f"<{message['role']}>{content}\n")
        return "".join(parts) + "<assistant>"


def _logprobs_chat(ids: list[int]) -> dict:
    return {"content": [{"token": str(i), "logprob": -0.25, "bytes": None, "top_logprobs": []} for i in ids]}


def chat_completion(model: StubModel, request: dict) -> dict:
    reply = model.next_reply()
    content = reply.get("content", "")
    prompt_ids = char_ids(model.render(request["messages"]))
    ids = reply.get("token_ids") or char_ids(content)
    choice: dict[str, Any] = {
        "index": 0, "finish_reason": reply.get("finish_reason", "stop"),
        "message": {"role": "assistant", "content": content, "tool_calls": reply.get("tool_calls")},
        "logprobs": _logprobs_chat(ids) if request.get("logprobs") else None,
    }
    response = {"id": f"chatcmpl-{model.served}", "object": "chat.completion", "created": int(time.time()),
                "model": request["model"], "choices": [choice],
                "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(ids),
                          "total_tokens": len(prompt_ids) + len(ids)}}
    if request.get("return_token_ids"):
        response["prompt_token_ids"] = prompt_ids
        choice["token_ids"] = ids
    return response


def text_completion(model: StubModel, request: dict) -> dict:
    prompt = request["prompt"]
    if not (isinstance(prompt, list) and all(isinstance(i, int) for i in prompt)):
        raise ValueError("this stub takes token-id prompts only")
    reply = model.next_reply()
    ids = list(reply["token_ids"])[: request.get("max_tokens") or None]
    logprobs = reply.get("logprobs") or [-0.25] * len(ids)
    choice: dict[str, Any] = {
        "index": 0, "text": reply.get("text", ""),
        "finish_reason": "length" if len(ids) < len(reply["token_ids"]) else reply.get("finish_reason", "stop"),
        "logprobs": {"tokens": [str(i) for i in ids], "token_logprobs": logprobs[: len(ids)],
                     "text_offset": [0] * len(ids), "top_logprobs": None},
    }
    if request.get("return_token_ids"):
        choice["token_ids"] = ids
        choice["prompt_token_ids"] = prompt
    return {"id": f"cmpl-{model.served}", "object": "text_completion", "created": int(time.time()),
            "model": request["model"], "choices": [choice],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids),
                      "total_tokens": len(prompt) + len(ids)}}


def make_handler(model: StubModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200)
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model.name, "object": "model",
                                                             "owned_by": "stub", "created": 0}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            model.requests.append((self.path, request))
            if request.get("model") != model.name:
                self._send(404, {"error": {"message": f"The model `{request.get('model')}` does not exist."}})
                return
            try:
                if self.path == "/v1/chat/completions":
                    self._send(200, chat_completion(model, request))
                elif self.path == "/v1/completions":
                    self._send(200, text_completion(model, request))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
            except (KeyError, ValueError) as error:
                self._send(400, {"error": {"message": str(error)}})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class StubServer:
    """The stub on 127.0.0.1 (a free port unless given) in a daemon thread, for the length of a `with` block."""

    def __init__(self, name: str = "stub-model", script: list[dict] | None = None, drift: bool = False,
                 port: int = 0):
        self.model = StubModel(name, script, drift)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.model))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which a never-started server never runs
            self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an OpenAI-compatible stub standing in for `vllm serve`")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name")
    parser.add_argument("--script", help="JSON list of replies")
    args, _ = parser.parse_known_args(argv)
    script = json.loads(args.script) if args.script else None
    model = StubModel(args.served_model_name or args.model, script)
    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(model))
    print(f"stub serving {model.name} on {args.host}:{args.port}", flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
