"""Runs openstacksdk snippets for the tests (whose virtualenv has no openstacksdk), one JSON line each.

Input: {"code": "...", "admin": false}; the snippet sees `conn` (the member's cloud kha-test, or
the admin's), `openstack`, and returns the value of its expression, or of `result` if it is a block.
Output: {"ok": value} or {"error": {"status": 409, "details": "...", "text": "..."}}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import openstack

from cloud import paths


def jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict(computed=False)
    if isinstance(value, (list, tuple, set)) or hasattr(value, "__next__"):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def main() -> None:
    conns: dict[bool, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        admin = bool(request.get("admin"))
        try:
            if admin not in conns:
                os.environ["OS_CLIENT_CONFIG_FILE"] = str(paths.ADMIN_YAML if admin else paths.CLOUDS_YAML)
                conns[admin] = openstack.connect(cloud=paths.ADMIN_CLOUD if admin else paths.CLOUD)
            scope = {"conn": conns[admin], "openstack": openstack}
            try:
                value = eval(request["code"], scope)
            except SyntaxError:
                exec(request["code"], scope)
                value = scope.get("result")
            answer = {"ok": jsonable(value)}
        except openstack.exceptions.HttpException as err:
            answer = {"error": {"status": err.status_code, "details": err.details, "text": str(err)}}
        except Exception as err:  # a broken snippet: report it, keep serving
            answer = {"error": {"status": None, "details": f"{type(err).__name__}: {err}", "text": repr(err)}}
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
