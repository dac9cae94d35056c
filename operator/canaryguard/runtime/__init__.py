"""The operator at run time: the tick orchestration (controller), the scheduler, kopf wiring,
and the operator's own metrics and logs. It receives its adapters, never builds them (only
`handlers`, the kopf wiring, does).
"""
