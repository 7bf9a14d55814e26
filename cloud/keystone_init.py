"""keystone-manage's four set-up commands in one interpreter: db_sync, fernet_setup,
credential_setup, bootstrap. Each keystone-manage start re-imports Keystone (seconds each, far
more on a busy machine); oslo.config can parse a second command line once cleared.

Usage (cloud virtualenv): python -m cloud.keystone_init CONFIG_FILE UID GID PASSWORD URL REGION
"""

from __future__ import annotations

import sys

from keystone.cmd import cli


def main(argv: list[str]) -> int:
    conf, uid, gid, password, url, region = argv
    owner = ["--keystone-user", uid, "--keystone-group", gid]
    for command in (
        ["db_sync"],
        ["fernet_setup", *owner],
        ["credential_setup", *owner],
        [
            "bootstrap",
            # One argument: a random password may start with "-", which argparse would take for an option.
            f"--bootstrap-password={password}",
            "--bootstrap-admin-url",
            url,
            "--bootstrap-public-url",
            url,
            "--bootstrap-internal-url",
            url,
            "--bootstrap-region-id",
            region,
        ],
    ):
        cli.CONF.clear()
        cli.main(["keystone-manage", "--config-file", conf, *command])
        print(f"keystone-manage {command[0]}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
