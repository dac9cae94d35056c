"""Fixtures for the mesh part of the local stack."""
