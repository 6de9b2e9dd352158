"""The official `ollama` Python client against switchboard's Ollama surface (`/api`)."""

import time

import ollama
import pytest

from conftest import CALL_WEATHER, WEATHER_RESULT, WEATHER_TOOL, said


def test_list_models(oll, sc):
    models = oll.list().models
    names = [m.model for m in models]
    for name in ("auto", sc.free_model, sc.paid_model):
        assert name in names, f"{name} missing from /api/tags: {names}"
    # Open WebUI keys on `model`, others on `name`: the raw listing carries both, with distinct digests.
    raw = oll._client.get("/api/tags").json()["models"]
    assert all(m["name"] and m["model"] for m in raw)
    assert len({m["digest"] for m in raw}) == len(raw)
    shown = oll.show(sc.free_model)
    assert "completion" in shown.capabilities


def test_chat(oll, sc):
    reply = oll.chat(model="auto", messages=[{"role": "user", "content": "hello there"}])
    assert reply.model == sc.free_model
    assert reply.message.role == "assistant"
    assert reply.message.content.startswith(said(sc.free_model, "hello there"))
    assert reply.done and reply.done_reason == "stop"
    assert reply.prompt_eval_count > 0 and reply.eval_count > 0
    assert reply.total_duration > 0


def test_chat_stream(oll, sc):
    whole = oll.chat(model="auto", messages=[{"role": "user", "content": "stream me"}])
    chunks = list(oll.chat(model="auto", messages=[{"role": "user", "content": "stream me"}], stream=True))
    assert len(chunks) > 2
    assert all(not c.done for c in chunks[:-1])
    last = chunks[-1]
    # The final object carries the counters and no text.
    assert last.done and last.done_reason == "stop" and last.message.content == ""
    assert last.eval_count > 0 and last.prompt_eval_count > 0
    assert all(c.model == sc.free_model for c in chunks)
    assert "".join(c.message.content for c in chunks) == whole.message.content


def test_tool_call_round_trip(oll):
    messages = [{"role": "user", "content": CALL_WEATHER}]
    first = oll.chat(model="auto", messages=messages, tools=[WEATHER_TOOL])
    [call] = first.message.tool_calls
    assert call.function.name == "get_weather"
    # Ollama's format: arguments are an object, not a string.
    assert call.function.arguments == {"city": "Paris"}

    messages.append(first.message)
    messages.append({"role": "tool", "content": WEATHER_RESULT, "tool_name": "get_weather"})
    second = oll.chat(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert WEATHER_RESULT in second.message.content
    assert second.done_reason == "stop"


def test_tool_call_streamed(oll):
    chunks = list(
        oll.chat(model="auto", messages=[{"role": "user", "content": CALL_WEATHER}], tools=[WEATHER_TOOL], stream=True)
    )
    calls = [call for c in chunks for call in (c.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert chunks[-1].done


def test_image(oll, sc):
    reply = oll.chat(
        model=sc.vision_model, messages=[{"role": "user", "content": "what is this", "images": [sc.image]}]
    )
    assert reply.model == sc.vision_model
    assert f"I see an image of {len(sc.image)} bytes" in reply.message.content


def test_embed(oll, sc):
    reply = oll.embed(model=sc.embed_model, input=["first text", "second text"])
    assert reply.model == sc.embed_model
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) > 0
    assert reply.embeddings[0] != reply.embeddings[1]
    single = oll.embed(model=sc.embed_model, input="first text")
    assert single.embeddings == [reply.embeddings[0]]
    # The legacy route answers one vector under `embedding`.
    legacy = oll.embeddings(model=sc.embed_model, prompt="first text")
    assert list(legacy.embedding) == reply.embeddings[0]


def test_generate(oll, sc):
    reply = oll.generate(model="auto", prompt="generate this")
    assert reply.model == sc.free_model
    assert reply.response.startswith(said(sc.free_model, "generate this"))
    assert reply.done and reply.done_reason == "stop" and reply.eval_count > 0
    chunks = list(oll.generate(model="auto", prompt="generate this", stream=True))
    assert chunks[-1].done and chunks[-1].response == ""
    assert "".join(c.response for c in chunks) == reply.response


def test_unknown_model_is_not_found(oll):
    with pytest.raises(ollama.ResponseError) as caught:
        oll.chat(model="no-such/model", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert "no-such/model" in caught.value.error


def test_free_to_paid_walk(oll, sc):
    first = oll.chat(model="auto", messages=[{"role": "user", "content": "first"}])
    assert first.model == sc.free_model
    # The free account's daily quota is spent now: the same request walks on to the paid tier.
    second = oll.chat(model="auto", messages=[{"role": "user", "content": "second"}])
    assert second.model == sc.paid_model
    assert second.message.content.startswith(said(sc.paid_model, "second"))


def test_rate_limited(oll):
    with pytest.raises(ollama.ResponseError) as caught:
        oll.chat(model="free", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 429


def test_stream_cut_raises(oll, sc):
    text = ""
    with pytest.raises(ollama.ResponseError):
        for chunk in oll.chat(model="auto", messages=[{"role": "user", "content": "cut me off"}], stream=True):
            text += chunk.message.content
    assert text.startswith(f"[{sc.free_model}]")


def test_disconnect(oll):
    stream = oll.chat(model="auto", messages=[{"role": "user", "content": "a long answer"}], stream=True)
    for received, _ in enumerate(stream, start=1):
        if received == 3:
            break
    stream.close()  # the generator's `with` block closes the HTTP response
    # Stay alive: the harness checks the upstream request ended while this process still runs.
    time.sleep(3)
