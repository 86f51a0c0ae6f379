"""Prefect automations ORCH creates from code (``python -m deployments.apply`` applies them).

- ``orch-alert-firing``: the event ``orch.alert.firing`` about ``orch.target.<name>`` (emitted by the
  monitoring sweep) runs the ``self-heal/auto`` deployment for that target; the run notifies.
- ``orch-flow-run-failed``: a Failed or Crashed run of any ORCH flow (tag ``orch``) sends a notification
  through every notification block ``blocks/register.py`` saved.

Idempotent: an automation of the same name is replaced, so re-applying after a config change is safe.
"""

from __future__ import annotations

from typing import Any

from orch.config.schema import Settings

HEAL_AUTOMATION = "orch-alert-firing"
FAILURE_AUTOMATION = "orch-flow-run-failed"
SELF_HEAL_DEPLOYMENT = "self-heal/auto"
FAILURE_SUBJECT = "[critical] ORCH flow run {{ flow.name }}/{{ flow_run.name }} is {{ flow_run.state.name }}"
FAILURE_BODY = ("Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
                "{{ flow_run.state.message }}\nRun: {{ flow_run|ui_url }}")


def _automations(settings: Settings, client: Any) -> list[Any]:
    from prefect.events.actions import RunDeployment, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from blocks.register import notification_blocks

    wanted = []
    deployment = client.read_deployment_by_name(SELF_HEAL_DEPLOYMENT)
    wanted.append(AutomationCore(
        name=HEAL_AUTOMATION, description="A firing ORCH target alert runs self-heal for that target.",
        trigger=EventTrigger(expect={"orch.alert.firing"}, match={"prefect.resource.id": "orch.target.*"},
                             for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1, within=0),
        actions=[RunDeployment(source="selected", deployment_id=deployment.id, parameters={
            "target": "{{ event.payload.target }}", "alert_name": "{{ event.payload.alert_name }}",
            "summary": "{{ event.payload.summary }}"})]))
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
        if FAILURE_AUTOMATION not in names:  # notifications were unconfigured since the last apply
            for existing in client.read_automations_by_name(FAILURE_AUTOMATION):
                client.delete_automation(existing.id)
    return names
