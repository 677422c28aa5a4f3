"""Prints the groups a SCIM ListResponse on stdin holds, with member ids."""
import json
import sys

for g in json.load(sys.stdin).get("Resources", []):
    members = ", ".join(m.get("value", "?")[:8] for m in g.get("members", []))
    print(f"  group {g['displayName']:<20} members: {members or '-'}")
