"""Accounts: sign-up, login, sessions and API tokens, users, roles, grants and permissions,
password hashing and access tokens, the login limits, and companies (tenancy)."""
