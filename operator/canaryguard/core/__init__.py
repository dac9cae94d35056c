"""The pure decision core: spec, status, judge, engine, query builders.

No I/O library, no clock, no adapter: given the spec, the previous status, the observations
and `now`, the engine returns the new status and the actions to carry out
(import-linter holds this, see `[tool.importlinter]` in pyproject.toml).
"""
