"""Per-partition values of intermediate assets, pickled into `asset_values`.

Only the pipeline's own assets write here, so unpickling reads back what we wrote ourselves.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import psycopg


def save_values(conn: psycopg.Connection, asset_key: str, values: Mapping[str, Any]) -> None:
    """Replace the stored value of each partition in `values` (one statement, one transaction)."""
    if not values:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO asset_values (asset_key, partition_key, value) VALUES (%s, %s, %s)
            ON CONFLICT (asset_key, partition_key)
            DO UPDATE SET value = EXCLUDED.value, updated_at = now()
            """,
            [(asset_key, key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) for key, value in values.items()],
        )


def load_values(conn: psycopg.Connection, asset_key: str, partition_keys: list[str]) -> dict[str, Any]:
    """Stored values for the partitions that have one."""
    rows = conn.execute(
        "SELECT partition_key, value FROM asset_values WHERE asset_key = %s AND partition_key = ANY(%s)",
        (asset_key, partition_keys),
    ).fetchall()
    return {r["partition_key"]: pickle.loads(r["value"]) for r in rows}


def delete_partition_values(conn: psycopg.Connection, partition_keys: list[str]) -> None:
    conn.execute("DELETE FROM asset_values WHERE partition_key = ANY(%s)", (partition_keys,))
