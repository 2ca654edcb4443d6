"""The SMS tests' app: the fake SMS.ru gateway (tests/conftest.py `gateway`) behind the
settings of `sms_settings`, which a module overrides when it needs others."""

from __future__ import annotations

from typing import Any

import pytest

from crm_core.platform.settings import Settings
from handlers.app import create_app
from tests.support.api import Api, Factories
from tests.support.sms_gateway import FakeGateway, sms_test_settings


@pytest.fixture
def sms_settings(gateway: FakeGateway) -> Settings:
    return sms_test_settings(gateway)


@pytest.fixture
async def sms_client(aiohttp_client: Any, sms_settings: Settings) -> Any:
    return await aiohttp_client(create_app(sms_settings))


@pytest.fixture
def sms_api(sms_client: Any) -> Api:
    return Api(sms_client)


@pytest.fixture
def create_table(sms_api: Api) -> Any:
    """Tables of the SMS tests live in the SMS app."""
    return Factories(sms_api).table
