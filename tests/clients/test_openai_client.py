"""The official `openai` Python client against switchboard's OpenAI surface (`/v1`)."""

import base64
import json
import time

import openai
import pytest

from conftest import CALL_WEATHER, WEATHER_RESULT, WEATHER_TOOL, said


def test_list_models(oai, sc):
    ids = [m.id for m in oai.models.list()]
    for name in ("auto", "free", "paid", sc.free_model, sc.paid_model):
        assert name in ids, f"{name} missing from /v1/models: {ids}"
    model = oai.models.retrieve(sc.free_model)
    assert model.id == sc.free_model
    assert model.object == "model"


def test_chat(oai, sc):
    raw = oai.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello there"}]
    )
    reply = raw.parse()
    # The model that actually answered, in the body and the headers.
    assert reply.model == sc.free_model
    assert raw.headers["x-switchboard-model"] == sc.free_model
    assert raw.headers["x-switchboard-tier"] == "free"
    assert raw.headers["x-switchboard-provider"] == "openrouter"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith(said(sc.free_model, "hello there"))
    assert choice.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_chat_stream(oai, sc):
    whole = oai.chat.completions.create(model="auto", messages=[{"role": "user", "content": "stream me"}])
    chunks = list(
        oai.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "stream me"}], stream=True
        )
    )
    assert len(chunks) > 2
    # Without include_usage every chunk carries a choice, and none carries usage.
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.model == sc.free_model for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_include_usage(oai, sc):
    text, usage = "", None
    stream = oai.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "count my tokens"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if not chunk.choices:  # the usage chunk has none: guard it, as the README shows
            usage = chunk.usage
            continue
        text += chunk.choices[0].delta.content or ""
    assert text.startswith(said(sc.free_model, "count my tokens"))
    assert usage is not None, "no usage chunk with include_usage"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_tool_call_round_trip(oai, sc):
    messages = [{"role": "user", "content": CALL_WEATHER}]
    first = oai.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT})
    second = oai.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert WEATHER_RESULT in second.choices[0].message.content
    assert second.choices[0].finish_reason == "stop"


def test_tool_call_streamed(oai):
    stream = oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": CALL_WEATHER}], tools=[WEATHER_TOOL], stream=True
    )
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        for piece in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            if piece.function:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    [call] = calls.values()
    assert call["id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}


def test_image(oai, sc):
    url = "data:image/png;base64," + base64.b64encode(sc.image).decode()
    reply = oai.chat.completions.create(
        model=sc.vision_model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    assert reply.model == sc.vision_model
    assert f"I see an image of {len(sc.image)} bytes" in reply.choices[0].message.content


def test_embeddings(oai, sc):
    reply = oai.embeddings.create(model=sc.embed_model, input=["first text", "second text", "first text"])
    assert reply.object == "list"
    assert reply.model == sc.embed_model
    vectors = [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
    assert len(vectors) == 3 and len(vectors[0]) > 0
    assert all(len(v) == len(vectors[0]) for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    single = oai.embeddings.create(model=sc.embed_model, input="first text")
    assert single.data[0].embedding == vectors[0]
    # Asked for floats outright (the call above let the client ask for base64 and decode it).
    floats = oai.embeddings.create(model=sc.embed_model, input="first text", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], rel=1e-6)


def test_legacy_completions(oai, sc):
    reply = oai.completions.create(model="auto", prompt="complete me")
    assert reply.model == sc.free_model
    assert reply.choices[0].text.startswith(said(sc.free_model, "complete me"))


def test_unknown_model_is_not_found(oai, sent):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="no-such/model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such/model" in caught.value.message
    assert len(sent) == 1, "a 404 is not retried"


def test_free_to_paid_walk(oai, sc):
    def ask(text):
        raw = oai.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}]
        )
        return raw.headers, raw.parse()

    headers, reply = ask("first")
    assert (headers["x-switchboard-tier"], headers["x-switchboard-provider"]) == ("free", "openrouter")
    assert headers["x-switchboard-model"] == reply.model == sc.free_model
    # The free account's daily quota is spent now: the same request walks on to the paid tier.
    headers, reply = ask("second")
    assert (headers["x-switchboard-tier"], headers["x-switchboard-provider"]) == ("paid", "ollama-cloud")
    assert headers["x-switchboard-model"] == reply.model == sc.paid_model
    assert reply.choices[0].message.content.startswith(said(sc.paid_model, "second"))


def test_rate_limited(oai, sent):
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="free", messages=[{"role": "user", "content": "hi"}])
    headers = caught.value.response.headers
    # The free quota is gone until 00:00 UTC and paid is not allowed: a long wait the SDK must not retry.
    assert int(headers["retry-after"]) > 0
    assert headers["x-should-retry"] == "false"
    assert len(sent) == 1, f"the SDK retried: {sent}"


def test_stream_cut_raises(oai, sc):
    text = ""
    with pytest.raises(openai.APIError):
        stream = oai.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "cut me off"}], stream=True
        )
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    # What came before the cut arrived, and the client was told it is not the whole answer.
    assert text.startswith(f"[{sc.free_model}]")


def test_disconnect(oai):
    stream = oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "a long answer"}], stream=True
    )
    received = 0
    for chunk in stream:
        received += 1
        if received == 3:
            break
    stream.close()
    # Stay alive: the harness checks the upstream request ended while this process still runs.
    time.sleep(3)
