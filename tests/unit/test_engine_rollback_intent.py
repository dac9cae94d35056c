"""The rollback's intent, tick by tick on the pure engine: a tick that rolls back returns, as
`TickResult.intent`, the status to store before its weights (the rollout where it was, plus
the rollback and its page Pending); a tick that starts from such a status completes that very
rollback, whatever it observes. The SLO `errors` has `window: 0s` here, so the breach that
rolls back is on no stored verdict.
"""

from __future__ import annotations

import json

from canaryguard.core.observations import Observations
from canaryguard.core.status import Status, status_from_dict
from tests.unit.scenario import (
    BREACH,
    FEW,
    HEALTHY,
    Rollout,
    cond,
    events,
    make_spec,
    obs,
    pages,
    spec_dict,
    weights,
)

KEY = "canaryguard/ml/scorer/scorer/v2@v2"


def at_half(dry_run: bool = False) -> Rollout:
    data = spec_dict()
    data["analysis"]["slos"][0]["window"] = "0s"
    data["dryRun"] = dry_run
    r = Rollout(make_spec(data))
    r.started()
    r.tick(30)
    r.tick(60)
    assert r.status.canary_weight == 50
    return r


def stored(status: Status) -> Status:
    return status_from_dict(json.loads(json.dumps(status.to_dict())))


def test_a_rollback_returns_its_intent_and_an_ordinary_tick_none() -> None:
    r = at_half()
    assert r.tick(75, obs(HEALTHY)).intent is None

    result = r.tick(90, obs(BREACH))

    intent = result.intent
    assert intent is not None
    assert (intent.phase, intent.step_index, intent.canary_weight) == ("Progressing", 1, 50)
    assert intent.rollback == result.status.rollback
    assert intent.rollback is not None and intent.rollback.canary == 0.05
    assert intent.page is not None and (intent.page.dedup_key, intent.page.state) == (
        KEY,
        "Pending",
    )
    assert (cond(intent, "Progressing").status, cond(intent, "Progressing").reason) == (
        "False",
        "RollingBack",
    )
    assert intent.history == r.status.history[:-1]  # the decision is recorded with the result
    assert result.status.phase == "RolledBack"


def test_a_stored_intent_is_completed_whatever_the_tick_observes() -> None:
    for seen in (BREACH, HEALTHY, FEW):
        r = at_half()
        intent = r.tick(90, obs(BREACH)).intent
        assert intent is not None
        r.status = stored(intent)  # the operator died after writing the intent

        result = r.tick(120, obs(seen))

        assert weights(result.actions) == [(100, 0)]
        assert [p.dedup_key for p in pages(result.actions)] == [KEY]
        assert events(result.actions) == [("Warning", "RolledBack")]
        assert result.intent is None  # not decided again: carried out
        status = result.status
        assert (status.phase, status.canary_weight) == ("RolledBack", 0)
        assert status.rollback == intent.rollback
        assert status.page is not None and status.page.state == "Pending"
        assert cond(status, "Progressing").reason == "RolledBack"

        again = r.tick(150, obs(seen))  # finished: the page is sent by the controller's result
        assert weights(again.actions) == []


def test_a_dry_run_rollback_has_no_intent() -> None:
    r = at_half(dry_run=True)
    result = r.tick(90, obs(BREACH))
    assert result.intent is None
    assert result.status.phase == "RolledBack"


def test_a_new_revision_drops_an_intent_left_by_the_old_one() -> None:
    """The intent belongs to its revision: a new revision starts over (as it does after a
    completed rollback) and carries the page's key as the incident to resolve."""
    r = at_half()
    intent = r.tick(90, obs(BREACH)).intent
    assert intent is not None
    data = spec_dict()
    data["revision"] = "v3"
    r.spec = make_spec(data)
    r.status = stored(intent)

    result = r.tick(120, Observations({"errors": HEALTHY}))

    assert result.status.rollback is None and result.status.phase == "Progressing"
    assert result.status.previous_incident is not None
    assert result.status.previous_incident.dedup_key == KEY
