//! Provider wire clients: OpenRouter / OpenAI-compatible (SSE) and Ollama (NDJSON), with pure stream parsers.
