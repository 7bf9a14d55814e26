"""Neutron's tables on sqlite: built from its models, then stamped at the migration heads.

`neutron-db-manage upgrade heads` cannot run on sqlite (its migrations ALTER constraints); Neutron's
own unit tests build the schema from the models the same way. The models carry no data, so the
one migration that seeds rows Neutron's API depends on, the default security-group rule templates
(every new group's egress rules), is replayed from Neutron's own migration module. Run in the
cloud's virtualenv with Neutron's --config-file arguments.
"""

from __future__ import annotations

import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import neutron
import sqlalchemy as sa
from neutron.db.migration.models import head

SEEDING_MIGRATION = (
    "db/migration/alembic_migrations/versions/2023.2/expand/c33da356b165_security_group_default_rules.py"
)


def seed_default_rules(engine: sa.engine.Engine) -> None:
    spec = importlib.util.spec_from_file_location("sg_default_rules", Path(neutron.__file__).parent / SEEDING_MIGRATION)
    assert spec is not None and spec.loader is not None, SEEDING_MIGRATION
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    table = head.get_metadata().tables[migration.table_name]
    with engine.begin() as conn:
        for template in migration.default_template_rules:
            rule = dict(template)
            attr = conn.execute(
                sa.insert(migration.standardattr).values(
                    description=rule.pop("description"), resource_type=migration.table_name
                )
            )
            conn.execute(sa.insert(table).values(**rule, standard_attr_id=attr.inserted_primary_key[0]))


def main(argv: list[str]) -> int:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(argv[1::2])
    engine = sa.create_engine(conf["database"]["connection"])
    head.get_metadata().create_all(engine)
    seed_default_rules(engine)
    engine.dispose()
    return subprocess.call([str(Path(sys.executable).parent / "neutron-db-manage"), *argv, "stamp", "heads"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
