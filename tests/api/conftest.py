"""The API from its factory, on a real database, through aiohttp's test client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from api.app import create_app
from api.auth import hash_key, new_key
from ivr.config import load_config
from ivr.store.db import open_database
from ivr.store.models import ApiKey, Project, Role


@dataclass
class Tenant:
    """A project with one key per role."""

    project_id: str
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.keys["owner"]


class ApiClient:
    def __init__(self, client, db):
        self.client = client
        self.db = db

    async def call(self, method: str, path: str, key: str | None = None, body=None, params=None,
                   expect: int | None = 200):
        headers = {"ApiKey": key} if key else {}
        resp = await self.client.request(method, path, json=body, headers=headers, params=params)
        payload = await resp.json(content_type=None)
        if expect is not None:
            assert resp.status == expect, f"{method} {path} -> {resp.status} {payload}"
        return payload if expect is not None else (resp.status, payload)

    async def post(self, path, key=None, body=None, **kw):
        return await self.call("POST", path, key, body, **kw)

    async def tenant(self, name: str = "Acme", roles=("owner", "admin", "member", "viewer")) -> Tenant:
        project = await Project.acreate(name=name)
        tenant = Tenant(str(project.id))
        for role in roles:
            tenant.keys[role] = await self.key(project.id, role=ROLE_BY_NAME[role])
        return tenant

    async def key(self, project_id, role: Role | None = None, permissions=(), expires=None) -> str:
        key = new_key()
        await ApiKey.acreate(project=project_id, name="test", keyHash=hash_key(key), keyPrefix=key[:10],
                             role=role.value if role else None, permissions=list(permissions), expiresAt=expires)
        return key

    async def create(self, resource: str, key: str, data: dict, expect: int = 200) -> dict:
        return await self.post(f"/api/{resource}", key, {"data": data}, expect=expect)


#: twilio.encryption_key of the tests' servers (a fixed Fernet key, so a test can decrypt what was stored).
TWILIO_ENCRYPTION_KEY = "Gk0e8Ng6t1V2xTmXq3Lr8cYb9AzPw5Hs7Jd4Ku6Mn0E="

#: twilio.api_base_url of the tests' servers: nothing listens there (no test reaches the real Twilio; those
#: that talk to Twilio use the stand-in, tests/twilio/rest_standin.py).
NO_TWILIO = "http://127.0.0.1:9"

ROLE_BY_NAME = {"owner": Role.OWNER, "admin": Role.ADMIN, "member": Role.MEMBER, "viewer": Role.VIEWER}


@pytest.fixture
def config(tmp_path):
    return load_config(env={"HOTLINE_GENERAL_DATA_DIR": str(tmp_path), "HOTLINE_API_RATE_LIMIT": "0",
                            "HOTLINE_TWILIO_ENCRYPTION_KEY": TWILIO_ENCRYPTION_KEY,
                            "HOTLINE_TWILIO_API_BASE_URL": NO_TWILIO})


@pytest.fixture
async def api(database_url, config, aiohttp_client):
    db = open_database(database_url, pool_size=2)
    app = create_app(config, db=db)
    client = await aiohttp_client(app)
    try:
        yield ApiClient(client, db)
    finally:
        await client.close()
        await db.close_pool()


@pytest.fixture
async def acme(api) -> Tenant:
    return await api.tenant("Acme")


def new_id() -> str:
    return str(uuid.uuid4())
