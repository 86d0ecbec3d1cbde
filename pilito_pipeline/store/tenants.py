"""The one tenant-id rule: 1-64 of `A-Z a-z 0-9 _ . -`, nothing else (no trailing newline).

Tenant ids end up in partition tags, index names and every query's filter. The database enforces
the same rule with a CHECK constraint on every table holding a tenant id (migrations 0001, 0005, 0008).
"""

from __future__ import annotations

import re

TENANT_ID_RULE = r"[A-Za-z0-9_.-]{1,64}"
_TENANT_ID = re.compile(TENANT_ID_RULE, re.ASCII)


class InvalidTenantId(ValueError):
    """Tenant ids are short identifiers (letters, digits, `_ . -`): they end up in keys and tags."""


def check_tenant_id(tenant_id: object) -> str:
    """Return `tenant_id` unchanged, or raise InvalidTenantId."""
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidTenantId(f"invalid tenant id {tenant_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return tenant_id
