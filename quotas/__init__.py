"""Quotas and rate limits: how much each person may use the models, and how."""
