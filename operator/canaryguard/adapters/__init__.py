"""Adapters: the only code that talks to the world (Kubernetes, Istio, Prometheus, PagerDuty).

Each implements a port from `canaryguard.core.ports`; adapters import the core, never the
runtime or the command line.
"""
