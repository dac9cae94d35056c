"""A traffic simulator around the real engine: Poisson requests, binomial errors, the
rollout's own schedule and SLOs. Used by `canaryguard plan` and bench/bench_judge.py.

Outside the core on purpose: it draws random numbers, which the core never does. It imports
the core only (an import-linter contract holds that)."""
