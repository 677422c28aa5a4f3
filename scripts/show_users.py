"""Prints the users a SCIM ListResponse on stdin holds, one line each."""
import json
import sys

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
users = json.load(sys.stdin).get("Resources", [])
for u in users:
    active = str(u.get("active", True)).lower()
    dept = u.get(ENTERPRISE, {}).get("department", "-")
    print(f"  {u['userName']:<24} active={active:<6} dept={dept:<12} title={u.get('title', '-')}")
if not users:
    print("  (no accounts)")
