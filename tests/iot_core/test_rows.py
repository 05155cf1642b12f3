"""The row shapes agree with the migrated tables, and the derived forms agree with the shapes."""

from __future__ import annotations

import psycopg
import pytest

from dagster_project.lib.validation import EVENT_SCHEMA, MEASUREMENT_SCHEMA
from iot_core.rows import DECODED_EVENT, DECODED_MEASUREMENT, STAGED_REJECTION, TABLES, Shape


@pytest.mark.services
@pytest.mark.parametrize("shape", TABLES, ids=lambda s: s.name)
def test_each_table_shape_matches_the_database(migrated_db: str, shape: Shape) -> None:
    with psycopg.connect(migrated_db) as conn:
        columns = conn.execute(
            """SELECT column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position""",
            (shape.name,),
        ).fetchall()
    assert columns, f"no table {shape.name}"
    assert dict(columns) == shape.sql_types()
    assert [name for name, _ in columns] == list(shape.columns)


def test_pandera_schemas_cover_every_column_of_their_shape() -> None:
    assert list(MEASUREMENT_SCHEMA.columns) == list(DECODED_MEASUREMENT.columns)
    assert list(EVENT_SCHEMA.columns) == list(DECODED_EVENT.columns)


def test_staging_table_is_derived_from_the_shape() -> None:
    ddl = STAGED_REJECTION.staging_ddl("stage_rejected")
    assert ddl.startswith("CREATE TEMP TABLE IF NOT EXISTS stage_rejected (raw_id bigint, item integer")
    assert ddl.endswith("arrived_at timestamp with time zone) ON COMMIT DELETE ROWS")


def test_a_shape_refuses_a_column_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="unknown columns"):
        Shape("bad", ("raw_id", "no_such_column"))
