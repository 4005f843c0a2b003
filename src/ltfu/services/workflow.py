"""Wires the LTFU workflow into FHIR writes: which resource types have hooks."""

from __future__ import annotations

from ltfu.services import notifications, requests
from ltfu.services.resources import HOOKS


def install_hooks() -> None:
    HOOKS.update({
        "ServiceRequest": requests.SERVICE_REQUEST_HOOK,
        "Task": requests.TASK_HOOK,
        "Subscription": notifications.SUBSCRIPTION_HOOK,
        "Organization": notifications.ORGANIZATION_HOOK,
        "Endpoint": notifications.ENDPOINT_HOOK,
    })
