"""Fixtures for the official-client suite: the `openai` and `ollama` clients pointed at the `switchboard run`
that tests/api_clients.rs started, with the simulators behind it. Run it through that harness:

    cargo test --test api_clients -- --ignored      (SB_PYTHON = a python with tests/clients/requirements.txt)

The harness passes what the scenario set up as SB_* environment variables and checks the simulators' side
(what reached the upstream) after pytest returns.
"""

import os

import httpx2
import ollama
import openai
import pytest


def setting(name):
    """A value the harness passed; a missing one fails the test (this suite never runs on its own)."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this suite through `cargo test --test api_clients -- --ignored`")
    return value


class Scenario:
    """What the harness configured: the API address and the model names the router serves."""

    def __init__(self):
        self.base_url = setting("SB_API_BASE")
        self.free_model = setting("SB_FREE_MODEL")
        self.paid_model = setting("SB_PAID_MODEL")
        self.embed_model = setting("SB_EMBED_MODEL")
        self.vision_model = setting("SB_VISION_MODEL")
        self.image = bytes.fromhex(setting("SB_IMAGE_HEX"))


@pytest.fixture
def sc():
    return Scenario()


@pytest.fixture
def sent():
    """Every HTTP request the openai client made (retries included), by path."""
    return []


@pytest.fixture
def oai(sc, sent):
    # The client's own httpx with a hook that records each request, so a test can tell whether the SDK
    # retried. No API key is configured on loopback; the SDK insists on one, so send a placeholder.
    http = httpx2.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]}, timeout=30)
    return openai.OpenAI(base_url=sc.base_url + "/v1", api_key="sk-unused-on-loopback", http_client=http)


@pytest.fixture
def oll(sc):
    return ollama.Client(host=sc.base_url, timeout=30)


def said(model, text):
    """The first sentence of every simulator answer: `[model] You said: <text>.`"""
    return f"[{model}] You said: {text}."


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# The simulators answer a request that carries tools and whose last user message reads
# `call <tool> <json arguments>` with that tool call.
CALL_WEATHER = 'call get_weather {"city":"Paris"}'
WEATHER_RESULT = "sunny and 21 degrees"
