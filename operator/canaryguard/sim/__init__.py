"""A traffic simulator around the real engine: Poisson requests, binomial errors, the
rollout's own schedule and SLOs. Used by `canaryguard plan` and bench/bench_judge.py (which
also measures against `oracle`: Wald's test with the baseline's rate known, and the
Neyman-Pearson bound on what any judge can catch by a deadline).

Outside the core on purpose: it draws random numbers, which the core never does. It imports
the core only (an import-linter contract holds that)."""
