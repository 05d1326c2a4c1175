"""Feature generations (lib/feature_generations.py) on a real DuckDB file: a build writes its own generation, the
stable schemas and the features link show the published one, publishing is one transaction plus one rename, and an
interruption at any point leaves the published generation visible and whole."""

import os
import shutil
from pathlib import Path

import duckdb
import pytest

from batch_platform.lib import feature_generations as gen


def _build(con, generation: str, root: Path, value: int) -> None:
    """What dbt does for one generation: tables, views over them, a parquet file and a view over it."""
    folder = gen.prepare(con, generation, root)
    for layer in gen.LAYERS:
        con.execute(f"CREATE SCHEMA {gen.schema(layer, generation)}")
    con.execute(f"CREATE TABLE marts__{generation}.flight_labels AS SELECT {value} AS v")
    con.execute(f"CREATE VIEW staging__{generation}.stg AS SELECT {value} AS v")
    con.execute(f"COPY (SELECT {value} AS v) TO '{folder}/plane_daily_features.parquet' (FORMAT parquet)")
    con.execute(f"CREATE VIEW marts__{generation}.plane_daily_features AS "
                f"SELECT * FROM read_parquet('{folder}/plane_daily_features.parquet')")


def _shown(con, features: Path) -> tuple:
    return (con.execute("SELECT v FROM marts.flight_labels").fetchall()[0][0],
            con.execute("SELECT v FROM staging.stg").fetchall()[0][0],
            con.execute("SELECT v FROM marts.plane_daily_features").fetchall()[0][0],
            con.execute(f"SELECT v FROM read_parquet('{features}/plane_daily_features.parquet')").fetchall()[0][0])


@pytest.fixture
def platform(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield con, tmp_path / "features", tmp_path / "feature_generations"
    con.close()


def test_builds_alternate_and_only_a_publication_changes_what_readers_see(platform):
    con, features, root = platform
    assert gen.published(con) is None and gen.next_generation(con) == "a"
    _build(con, "a", root, 1)
    gen.publish(con, "a", "run-1")
    gen.link(features, root, "a")
    assert _shown(con, features) == (1, 1, 1, 1)
    assert gen.next_generation(con) == "b"

    _build(con, "b", root, 2)  # built (and, say, its tests failed): not published
    assert _shown(con, features) == (1, 1, 1, 1)
    gen.publish(con, "b", "run-2")
    gen.link(features, root, "b")
    assert _shown(con, features) == (2, 2, 2, 2)
    assert gen.published(con).generation == "b" and gen.published(con).run_id == "run-2"
    with pytest.raises(gen.GenerationError):
        gen.prepare(con, "b", root)  # the published generation is never written

    _build(con, "a", root, 3)  # the next build wipes what generation a held
    assert _shown(con, features) == (2, 2, 2, 2)


def _a_published_b_built(con, features: Path, root: Path) -> None:
    """Generation a (value 1) published, generation b (value 2) built, not yet published."""
    _build(con, "a", root, 1)
    gen.publish(con, "a")
    gen.link(features, root, "a")
    _build(con, "b", root, 2)


def test_a_crash_between_the_warehouse_and_the_link_is_completed(platform):
    con, features, root = platform
    _a_published_b_built(con, features, root)
    gen.publish(con, "b")  # ... killed here, before the link moved
    assert gen.linked(features) == "a"
    assert "re-linked to generation b" in gen.reconcile(con, features, root)
    assert _shown(con, features) == (2, 2, 2, 2)
    assert gen.reconcile(con, features, root) is None


def test_a_failed_publication_changes_nothing(platform):
    con, features, root = platform
    _a_published_b_built(con, features, root)
    con.execute("CREATE TABLE marts__b.t AS SELECT 1 AS v")
    con.execute("CREATE VIEW marts__b.zz_broken AS SELECT * FROM marts__b.t")
    con.execute("DROP TABLE marts__b.t")  # the view no longer binds: publishing it fails half-way
    with pytest.raises(duckdb.Error):
        gen.publish(con, "b")
    assert gen.published(con).generation == "a"
    assert _shown(con, features) == (1, 1, 1, 1)


def test_the_link_is_relative_so_a_copied_folder_reads_its_own_files(platform, tmp_path):
    con, features, root = platform
    _build(con, "a", root, 1)
    gen.publish(con, "a")
    gen.link(features, root, "a")
    assert not os.readlink(features).startswith("/")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(root, copy / root.name, symlinks=True)
    shutil.copy2(features, copy / "features", follow_symlinks=False)
    assert (copy / "features").resolve() == (copy / root.name / "a").resolve()


def test_a_plain_features_folder_is_replaced_by_the_link_at_publication(platform):
    """A data dir from before generations (or a copy that turned the link into a folder): left alone by
    reconcile, replaced by the next publication."""
    con, features, root = platform
    features.mkdir()
    (features / "old.parquet").write_text("x")
    _build(con, "a", root, 1)
    gen.publish(con, "a")
    assert gen.reconcile(con, features, root) is None and (features / "old.parquet").exists()
    gen.link(features, root, "a")
    assert gen.linked(features) == "a" and not (features / "old.parquet").exists()
    assert [p.name for p in features.parent.iterdir() if p.name.startswith(".features")] == []


def test_publication_replaces_the_tables_of_the_layout_before_generations(platform):
    con, features, root = platform
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.flight_labels AS SELECT 0 AS v")
    con.execute("CREATE TABLE marts.gone AS SELECT 0 AS v")
    _build(con, "a", root, 1)
    gen.publish(con, "a")
    gen.link(features, root, "a")
    assert _shown(con, features) == (1, 1, 1, 1)
    kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                             "WHERE table_schema = 'marts'").fetchall())
    assert kinds == {"flight_labels": "VIEW", "plane_daily_features": "VIEW"}


def test_a_partial_build_starts_from_a_copy_and_stands_alone(platform):
    """A build of some models copies the published generation first (tables, views re-pointed at the copy, files):
    the models it does not rebuild read the new generation's relations and files, never the old one's."""
    con, features, root = platform
    _build(con, "a", root, 1)
    con.execute("CREATE VIEW marts__a.labels_view AS SELECT v + 10 AS v FROM marts__a.flight_labels")
    gen.publish(con, "a")
    gen.link(features, root, "a")
    gen.prepare(con, "b", root)
    assert gen.clone(con, "a", "b", root) == 4  # a table, three views
    con.execute("CREATE OR REPLACE TABLE marts__b.flight_labels AS SELECT 7 AS v")  # the one model rebuilt
    gen.publish(con, "b")
    gen.link(features, root, "b")
    gen.prepare(con, "a", root)  # generation a is wiped: b must not read it
    assert con.execute("SELECT v FROM marts.labels_view").fetchall() == [(17,)]  # reads b's rebuilt table
    assert _shown(con, features) == (7, 1, 1, 1)
    assert "feature_generations/b/" in con.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'marts__b' AND view_name = 'plane_daily_features'"
    ).fetchall()[0][0]


def test_a_feature_table_is_read_from_its_dataset_folder_else_its_file(tmp_path):
    assert gen.feature_table(tmp_path, "t") == tmp_path / "t"  # nothing yet: the folder dbt's datasets write
    (tmp_path / "t.parquet").write_bytes(b"")
    assert gen.feature_table(tmp_path, "t") == tmp_path / "t.parquet"  # an external mart's file
    (tmp_path / "t").mkdir()
    assert gen.feature_table(tmp_path, "t") == tmp_path / "t"
