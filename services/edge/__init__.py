"""The edge service: credentials in (API keys, JWTs), scopes, rate limits, quotas."""
