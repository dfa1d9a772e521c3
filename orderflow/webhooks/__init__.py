"""The webhook service: verify vendor webhooks, map them to canonical models, start or signal sagas."""
