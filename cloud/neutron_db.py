"""Neutron's tables on sqlite: built from its models, then stamped at the migration heads.

`neutron-db-manage upgrade heads` cannot run on sqlite (its migrations ALTER constraints); Neutron's
own unit tests build the schema from the models the same way. Run in the cloud's virtualenv with
Neutron's --config-file arguments.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import sqlalchemy

from neutron.db.migration.models import head


def main(argv: list[str]) -> int:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(argv[1::2])
    engine = sqlalchemy.create_engine(conf["database"]["connection"])
    head.get_metadata().create_all(engine)
    engine.dispose()
    return subprocess.call([str(Path(sys.executable).parent / "neutron-db-manage"), *argv, "stamp", "heads"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
