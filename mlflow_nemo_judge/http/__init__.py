"""HTTP to OpenAI-compatible endpoints: the client, retries, the response cache."""
