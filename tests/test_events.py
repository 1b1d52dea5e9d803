"""The one table of same-tick event priorities (blis/events.py)."""

import re
from pathlib import Path

from blis import events

BLIS = Path(events.__file__).parent


def test_priorities_are_distinct_within_each_event_source():
    for table in (events.CLUSTER_EVENTS, events.INSTANCE_EVENTS):
        assert len(set(table.values())) == len(table)


def test_the_table_lists_every_constant_it_defines():
    defined = {name: value for name, value in vars(events).items() if name.startswith("EV_")}
    listed = list(events.CLUSTER_EVENTS.values()) + list(events.INSTANCE_EVENTS.values())
    assert sorted(defined.values()) == sorted(listed)


def test_no_other_module_defines_an_event_priority():
    assignment = re.compile(r"^EV_\w+\s*=", re.MULTILINE)
    offenders = [str(p.relative_to(BLIS)) for p in BLIS.rglob("*.py")
                 if p.name != "events.py" and assignment.search(p.read_text())]
    assert offenders == []


def test_spec_order_of_a_requests_gateway_stages_and_instance_events():
    assert events.EV_NODE_READY < events.EV_INSTANCE < events.EV_ARRIVAL < events.EV_ADMISSION \
        < events.EV_ROUTING < events.EV_PREFILL_ROUTING < events.EV_KV_TRANSFER_STARTED \
        < events.EV_KV_TRANSFER_COMPLETED < events.EV_SCALING_TICK < events.EV_SCALE_ACTUATION
    assert events.EV_QUEUED < events.EV_STEP < events.EV_TIMEOUT
