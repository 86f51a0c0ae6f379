"""Prefect automations ORCH creates from code (``python -m deployments.apply`` applies them).

- ``orch-flow-run-failed``: a Failed or Crashed run of any ORCH flow (tag ``orch``) sends a notification
  through every notification block ``blocks/register.py`` saved.

Idempotent: an automation of the same name is replaced, so re-applying after a config change is safe.

No automation runs ``self-heal`` any more: a heal must run on its target's host, and Prefect's RunDeployment
action cannot choose a work queue (only parameters and job variables), so the monitoring sweep creates the
run on the host's queue itself (orch/monitoring/hosts.py). ``orch-alert-firing``, which earlier versions
created, is deleted when found: left in place it would heal every target a second time, on any host.
"""

from __future__ import annotations

from typing import Any

from orch.config.schema import Settings

RETIRED_AUTOMATIONS = ("orch-alert-firing",)
FAILURE_AUTOMATION = "orch-flow-run-failed"
FAILURE_SUBJECT = "[critical] ORCH flow run {{ flow.name }}/{{ flow_run.name }} is {{ flow_run.state.name }}"
FAILURE_BODY = ("Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
                "{{ flow_run.state.message }}\nRun: {{ flow_run|ui_url }}")


def _automations(settings: Settings, client: Any) -> list[Any]:
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from blocks.register import notification_blocks

    wanted = []
    blocks = notification_blocks(settings)
    if blocks:
        ids = [client.read_block_document_by_name(name, block.get_block_type_slug()).id
               for name, block in blocks.items()]
        wanted.append(AutomationCore(
            name=FAILURE_AUTOMATION, description="A Failed or Crashed run of an ORCH flow notifies.",
            trigger=EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                                 match={"prefect.resource.id": "prefect.flow-run.*"},
                                 match_related={"prefect.resource.id": "prefect.tag.orch"},
                                 posture=Posture.Reactive, threshold=1, within=0),
            actions=[SendNotification(block_document_id=block_id, subject=FAILURE_SUBJECT, body=FAILURE_BODY)
                     for block_id in ids]))
    return wanted


def apply_automations(settings: Settings) -> list[str]:
    """Create or replace ORCH's automations; returns their names. Needs the deployments and blocks applied."""
    from prefect.client.orchestration import get_client

    names = []
    with get_client(sync_client=True) as client:
        for automation in _automations(settings, client):
            for existing in client.read_automations_by_name(automation.name):
                client.delete_automation(existing.id)
            client.create_automation(automation)
            names.append(automation.name)
        stale = [*RETIRED_AUTOMATIONS, *([FAILURE_AUTOMATION] if FAILURE_AUTOMATION not in names else [])]
        for name in stale:  # notifications unconfigured since the last apply; automations ORCH no longer has
            for existing in client.read_automations_by_name(name):
                client.delete_automation(existing.id)
    return names
