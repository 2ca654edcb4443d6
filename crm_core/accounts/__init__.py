"""Accounts: sign-up, login, sessions and API tokens, users, roles, grants and permissions
(with the table access levels), password hashing, the login limits, and companies (tenancy).

Exports nothing: models import `permissions`, and this package's services import models, so
an import here would close a circle (tests/platform/test_architecture.py). The services are
`auth.AuthService`, `users.UserService`, `roles.RoleService`, `tenancy.TenantService` and
`tokens.ApiTokenService`."""
