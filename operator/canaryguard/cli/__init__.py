"""The `canaryguard` and `kubectl canary` commands."""
