"""The Anthropic-compatible simulator: an HTTP server on loopback (``simulator``) that answers
the Messages API as unkindly as the real models (``fake_*``: thinking, cuts, refusals, caching,
streaming). It stands in for the provider; it judges requests with the engine's own rules, so
it sits above the engine and nothing below it imports it."""
