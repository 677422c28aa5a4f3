"""Runs scim2-tester's checks against a SCIM server and prints the results
as JSON, one object per check. Usage: scim2_check.py BASE_URL TOKEN"""

import json
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server


def main() -> int:
    base_url, token = sys.argv[1], sys.argv[2]
    http = Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    client = SyncSCIMClient(http)
    results = check_server(client, raise_exceptions=False)
    out = [
        {
            "title": r.title,
            "status": r.status.name,
            "reason": r.reason,
            "resource_type": r.resource_type,
            "tags": sorted(r.tags or []),
        }
        for r in results
    ]
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
