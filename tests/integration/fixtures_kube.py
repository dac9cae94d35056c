"""Fixtures for the kube part of the local stack."""
