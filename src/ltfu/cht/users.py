"""Which CHT persons are a CHT user's contact (CHWs, supervisors): staff, never patients.

A contact created by the users API (how a CHW is registered) carries nothing that marks it as staff
(no ``role``, recorded on cht-core 5.2); only the user doc's ``contact_id`` points at it, so CHT is
asked (``GET /api/v2/users?contact_id=``, permission ``can_view_users``).
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp

from ltfu.cht.client import ChtClient


class ChtUnavailable(Exception):
    """CHT could not answer now; the caller should ask again later."""


class ChtUsers:
    def __init__(self, client: ChtClient) -> None:
        self.client = client

    async def is_user_contact(self, person_id: str) -> bool:
        try:
            resp = await self.client.request("GET", "/api/v2/users?" + urlencode({"contact_id": person_id}))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChtUnavailable(f"CHT did not answer the users lookup ({type(exc).__name__})") from None
        if resp.status == 200 and isinstance(resp.body, list):
            return bool(resp.body)
        hint = " (the mediator's CHT user needs can_view_users)" if resp.status in (401, 403) else ""
        raise ChtUnavailable(f"CHT answered {resp.status} to the users lookup{hint}")

    async def close(self) -> None:
        await self.client.close()
