"""Fixtures for the pagerduty part of the local stack."""
