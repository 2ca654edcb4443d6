"""The long-lived objects one running service holds, built by the app factory."""

from __future__ import annotations

from dataclasses import dataclass

from crm_core.auth import AuthService
from crm_core.settings import Settings
from crm_core.storage import Storage


@dataclass
class Services:
    settings: Settings
    storage: Storage
    auth: AuthService
