"""What one SCIM tenant holds, or wiping it, for the demo.

    scim_tenant.py summary BASE_URL   counts: accounts (active), groups (members)
    scim_tenant.py access BASE_URL    who has access: the active userNames and
                                      each group's members by userName, one
                                      line, comparable across remote ids
    scim_tenant.py wipe BASE_URL      DELETE every group, then every user

BASE_URL is the tenant's SCIM root, e.g. http://127.0.0.1:8090/wiki/v2; the
bearer token is read from TENURE_APP_TOKEN (kept off the command line).
Only the standard library, so it runs with the system python3.
"""
import json
import os
import sys
import urllib.request

PAGE = 100


def call(method, url, token):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def list_all(base, kind, token):
    # Page through with startIndex: a tenant may hold more than one page.
    out, start = [], 1
    while True:
        page = call("GET", f"{base}/{kind}?startIndex={start}&count={PAGE}", token)
        got = page.get("Resources", [])
        out.extend(got)
        start += len(got)
        if not got or start > page.get("totalResults", 0):
            return out


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary(base, token):
    users = list_all(base, "Users", token)
    groups = list_all(base, "Groups", token)
    active = sum(1 for u in users if u.get("active", True))
    members = sum(len(g.get("members", [])) for g in groups)
    return (f"{plural(len(users), 'account')} ({active} active), "
            f"{plural(len(groups), 'group')} ({plural(members, 'membership')})")


def access(base, token):
    # Remote ids change when an app is rebuilt, so members are named by userName.
    users = list_all(base, "Users", token)
    names = {u["id"]: u["userName"] for u in users}
    active = sorted(u["userName"] for u in users if u.get("active", True))
    groups = sorted(
        f"{g['displayName']}[{' '.join(sorted(names.get(m.get('value'), '?') for m in g.get('members', [])))}]"
        for g in list_all(base, "Groups", token))
    return f"active: {', '.join(active) or '-'}; groups: {', '.join(groups) or '-'}"


def wipe(base, token):
    # Groups first: their members point at the users.
    groups = list_all(base, "Groups", token)
    users = list_all(base, "Users", token)
    for g in groups:
        call("DELETE", f"{base}/Groups/{g['id']}", token)
    for u in users:
        call("DELETE", f"{base}/Users/{u['id']}", token)
    return f"deleted {plural(len(users), 'account')} and {plural(len(groups), 'group')}"


def main():
    commands = {"summary": summary, "access": access, "wipe": wipe}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    token = os.environ.get("TENURE_APP_TOKEN")
    if not token:
        sys.exit("TENURE_APP_TOKEN is not set")
    print(commands[sys.argv[1]](sys.argv[2].rstrip("/"), token))


if __name__ == "__main__":
    main()
