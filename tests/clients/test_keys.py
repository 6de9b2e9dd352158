"""Client API keys through the official clients: `openai` with `api_key=`, `ollama` with `OLLAMA_API_KEY`
(sent as `Authorization: Bearer`). Run by tests/keys.rs (`official_clients_authenticate_with_a_key`), which
starts `switchboard run` with one key and passes SB_API_BASE, SB_API_KEY and SB_FREE_MODEL.
"""

import os

import ollama
import openai
import pytest


def setting(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this file through `cargo test --test keys -- --ignored`")
    return value


def test_openai_with_a_key_lists_and_chats():
    client = openai.OpenAI(base_url=setting("SB_API_BASE") + "/v1", api_key=setting("SB_API_KEY"))
    ids = [m.id for m in client.models.list()]
    assert setting("SB_FREE_MODEL") in ids
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    assert raw.parse().choices[0].message.content


def test_openai_with_a_wrong_key_raises_authentication_error():
    key = setting("SB_API_KEY")
    client = openai.OpenAI(base_url=setting("SB_API_BASE") + "/v1", api_key=key[:-4] + "0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])


def test_ollama_with_ollama_api_key_lists_and_chats(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", setting("SB_API_KEY"))
    client = ollama.Client(host=setting("SB_API_BASE"))
    names = [m.model for m in client.list().models]
    assert setting("SB_FREE_MODEL") in names
    reply = client.chat(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content


def test_ollama_without_a_key_raises_response_error(monkeypatch):
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    client = ollama.Client(host=setting("SB_API_BASE"))
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
