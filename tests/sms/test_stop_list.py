"""The stop list (docs/sms.md, "Stop list"): per company, E.164-normalised; a listed number is
never sent (state `blocked`), also when it was listed after the campaign was created."""

from __future__ import annotations

import pytest

from tests.support.api import wait_done
from tests.support.sms_gateway import phone

STOP_LIST = "/api/sms/stop-list"


async def test_stop_list_add_list_remove(sms_api):
    owner = await sms_api.register()
    added = await sms_api.call(
        "POST",
        STOP_LIST,
        owner,
        expect=200,
        json={"phones": ["8 (916) 000-00-01", "+79160000002", "+7 916 000 00 01"]},
    )
    assert added == {
        "changed": 2,
        "unchanged": 1,
        "phones": ["+79160000001", "+79160000002", "+79160000001"],
    }
    again = await sms_api.call("POST", STOP_LIST, owner, expect=200, json={"phones": [phone(2)]})
    assert again["changed"] == 0 and again["unchanged"] == 1
    listed = await sms_api.call("GET", STOP_LIST, owner, expect=200)
    assert [i["phone"] for i in listed["items"]] == [phone(1), phone(2)] and listed["total"] == 2
    assert listed["items"][0]["added_by"] == owner.user_id
    removed = await sms_api.call(
        "DELETE", STOP_LIST, owner, expect=200, json={"phones": ["89160000001", phone(9)]}
    )
    assert removed["changed"] == 1 and removed["unchanged"] == 1
    listed = await sms_api.call("GET", f"{STOP_LIST}?limit=1", owner, expect=200)
    assert [i["phone"] for i in listed["items"]] == [phone(2)]
    other = await sms_api.register()  # another company has its own list
    assert (await sms_api.call("GET", STOP_LIST, other, expect=200))["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phones": ["+79160000001", "12345"]}, "phones.1"),
        ({"phones": []}, "phones"),
        ({"phones": "+79160000001"}, "phones"),
        ({"numbers": ["+79160000001"]}, "phones"),
    ],
)
async def test_stop_list_bad_input_is_400_naming_the_field(sms_api, body, field):
    owner = await sms_api.register()
    for method in ("POST", "DELETE"):
        resp = await sms_api.client.request(method, STOP_LIST, headers=owner.headers, json=body)
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "validation_error" and field in error["message"]
    assert (await sms_api.call("GET", STOP_LIST, owner, expect=200))["total"] == 0


async def test_stop_list_needs_permission(sms_api, sms_client):
    from tests.support.api import add_user

    owner = await sms_api.register()
    viewer = await add_user(sms_api, sms_client, owner, "viewer")
    await sms_api.call("POST", STOP_LIST, viewer, expect=403, json={"phones": [phone(1)]})
    await sms_api.call("GET", STOP_LIST, None, expect=401)


async def test_a_stop_listed_number_is_never_sent(sms_api, gateway):
    owner = await sms_api.register()
    await sms_api.call("POST", STOP_LIST, owner, expect=200, json={"phones": ["89160000001"]})
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "s", "text": "t", "recipients": [{"phone": phone(i)} for i in range(3)]},
    )
    assert created["counts"]["blocked"] == 1
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 2 and done["counts"]["blocked"] == 1
    assert phone(1)[1:] not in [r.phone for r in gateway.received]
    page = await sms_api.call(
        "GET", f"/api/sms/campaigns/{created['id']}/messages?status=blocked", owner, expect=200
    )
    assert [m["phone"] for m in page["items"]] == [phone(1)]
    assert "stop list" in page["items"][0]["error"]


async def test_a_number_listed_after_creation_is_blocked_at_send(sms_api, sms_client, gateway):
    """Listed between the campaign's creation and its sending: the sender checks before each
    claim."""
    from handlers.routing import SERVICES

    owner = await sms_api.register()
    services = sms_client.app[SERVICES]
    held = services.sms_queue

    class Holding:  # the broker takes the batches only when told
        def __init__(self):
            self.work = []

        async def send_batch(self, *args):
            self.work.append(("batch", args))

        async def send_one(self, *args):
            self.work.append(("one", args))

    holding = Holding()
    services.sms_queue = holding
    created = await sms_api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "s", "text": "t", "recipients": [{"phone": phone(i)} for i in range(6)]},
    )
    await sms_api.call("POST", STOP_LIST, owner, expect=200, json={"phones": [phone(2), phone(5)]})
    services.sms_queue = held
    for _, args in holding.work:
        await held.send_batch(*args)
    done = await wait_done(sms_api, owner, created["id"])
    assert done["counts"]["sent"] == 4 and done["counts"]["blocked"] == 2
    assert sorted(r.phone for r in gateway.received) == sorted(phone(i)[1:] for i in (0, 1, 3, 4))
