async def test_create_and_list(api, acme):
    created = await api.create("incoming-call-policy", acme.owner, {"name": "Ops"})
    listed = await api.post("/api/incoming-call-policy/get-list", acme.owner, {"select": {"name": True}})
    assert listed["data"] == [{"_id": created["_id"], "name": "Ops"}]
