"""scim2-server with fault modes: a SCIM server that misbehaves like real ones.

Runs the ``scim2-server`` command itself (same flags: ``--port``,
``--bearer-token``, ``--dynamic-tenants``, ...) with its WSGI application
wrapped in :class:`FaultMiddleware`. Each ``--fault NAME`` (repeatable)
switches on one misbehaviour, for the whole process; see FAULTS and
tests/peers/README.md.

``GET /_faults/requests`` answers the log of the requests the server
received (method, path, query, content type, body, status);
``DELETE /_faults/requests`` clears it. Both need a configured bearer token.
"""

import io
import json
import re
import sys
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from scim2_server.testserver import cli

FAULTS = {
    "members-by-username": "group members[].value is the member's userName, not its id",
    "count-500": "a list request with a `count` query parameter answers 500",
    "require-name-formatted": "a User create/replace without name.formatted answers 400",
    "reject-email-type-primary": "a User whose emails carry type or primary answers 400",
    "duplicate-500": "a User create with a taken userName answers 500 with an HTML page",
    "no-filter": "the `filter` of a list or .search is ignored",
    "reject-member-path-filter": 'a Group PATCH with path members[value eq "..."] answers 400',
    "html-errors": "every error body is a ~20 KB HTML page",
    "no-patch-groups": "PATCH on /Groups/{id} answers 405",
    "content-type-json-only": "a body whose media type is not application/json answers 415",
}

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
CONTROL_PREFIX = "/_faults"

Response = tuple[int, list[tuple[str, str]], bytes]


def scim_error(status: int, detail: str, scim_type: str | None = None) -> Response:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status)}
    if scim_type is not None:
        body["scimType"] = scim_type
    body["detail"] = detail
    return json_response(status, body, "application/scim+json")


def json_response(
    status: int, body: Any, content_type: str = "application/json"
) -> Response:
    return status, [("Content-Type", content_type)], json.dumps(body).encode()


def html_page(title: str, message: str, filler_rows: int) -> bytes:
    """An HTML error page like the ones of web frameworks and reverse proxies:
    mostly markup, styles and navigation, with the message buried inside."""
    rows = "\n".join(
        f'      <tr class="frame"><td class="lineno">{i}</td>'
        f'<td class="code"><span class="kw">at</span> '
        f"App\\Http\\Controller\\ScimController-&gt;handle(Request $request) "
        f"in /var/www/html/app/Http/Controller/ScimController.php:{100 + i}</td></tr>"
        for i in range(filler_rows)
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <style>
    body {{ font-family: -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f4f5f7; }}
    header {{ background: #1f2d3d; color: #fff; padding: 12px 24px; }}
    .frame td {{ border-bottom: 1px solid #e1e4e8; padding: 2px 8px; font-family: monospace; }}
    .lineno {{ color: #999; text-align: right; }}
  </style>
</head>
<body>
  <header><nav><a href="/">Home</a> | <a href="/settings">Settings</a> | <a href="/help">Help</a></nav></header>
  <main>
    <h1>{title}</h1>
    <p class="message">{message}</p>
    <table class="trace">
{rows}
    </table>
  </main>
  <footer><p>Request ID: 7f3c2a9e-0000-4000-8000-000000000000</p></footer>
</body>
</html>
"""
    return page.encode()


def html_response(status: int, message: str, filler_rows: int) -> Response:
    title = f"{status} {HTTPStatus(status).phrase}"
    body = html_page(title, message, filler_rows)
    return status, [("Content-Type", "text/html; charset=UTF-8")], body


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class Route:
    """Where a request goes: ``/<tenant>/v2/<resource>/<id>``."""

    def __init__(self, path: str):
        segments = [s for s in path.split("/") if s]
        self.prefix: str | None = None
        self.resource: str | None = None
        self.id: str | None = None
        if "v2" in segments:
            at = segments.index("v2")
            self.prefix = "/" + "/".join(segments[: at + 1])
            rest = segments[at + 1 :]
            self.resource = rest[0] if rest else None
            self.id = rest[1] if len(rest) > 1 else None

    def is_users(self) -> bool:
        return self.resource == "Users"

    def is_groups(self) -> bool:
        return self.resource == "Groups"

    def is_list(self) -> bool:
        return self.resource is not None and self.id is None


MEMBER_PATH_FILTER = re.compile(r"^\s*members\s*\[", re.IGNORECASE)
# `members[value eq "X"]` in a PATCH path, `members.value eq "X"` in a filter.
MEMBER_VALUE_EQ = re.compile(
    r'(members\s*(?:\.\s*value|\[\s*value)\s+eq\s+")((?:[^"\\]|\\.)*)(")',
    re.IGNORECASE,
)


def email_attributes(value: Any) -> list[str]:
    """The sub-attributes among type/primary that emails carry in a value."""
    items = value if isinstance(value, list) else [value]
    found = set()
    for item in items:
        if isinstance(item, dict):
            found |= {k for k in ("type", "primary") if k in item}
    return sorted(found)


def patch_operations(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    ops = body.get("Operations") or []
    return [op for op in ops if isinstance(op, dict)]


def op_path(op: dict[str, Any]) -> str:
    path = op.get("path")
    return path if isinstance(path, str) else ""


class FaultMiddleware:
    """Wraps scim2-server's WSGI application; see FAULTS."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], faults: Iterable[str], tokens: Iterable[str]
    ):
        self.app = app
        self.faults = frozenset(faults)
        self.tokens = frozenset(tokens)
        self.log: list[dict[str, Any]] = []
        self.log_lock = threading.Lock()

    # --- WSGI ---------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            status, headers, body = self.control(environ, path)
        else:
            body_in = self.read_body(environ)
            status, headers, body = self.serve(environ, body_in)
            self.record(environ, body_in, status)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    @staticmethod
    def read_body(environ: dict[str, Any]) -> bytes:
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        return environ["wsgi.input"].read(size) if size > 0 else b""

    def authorized(self, environ: dict[str, Any]) -> bool:
        if not self.tokens:
            return True
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        return scheme.lower() == "bearer" and token in self.tokens

    def record(self, environ: dict[str, Any], body: bytes, status: int) -> None:
        try:
            logged: Any = json.loads(body) if body else None
        except ValueError:
            logged = body.decode("utf-8", "replace")
        entry = {
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            # wsgiref reports text/plain for a request without Content-Type.
            "content_type": (environ.get("CONTENT_TYPE") or None) if body else None,
            "body": logged,
            "status": status,
        }
        with self.log_lock:
            self.log.append(entry)

    def control(self, environ: dict[str, Any], path: str) -> Response:
        if not self.tokens or not self.authorized(environ):
            return scim_error(401, "The fault server's control needs its bearer token")
        method = environ.get("REQUEST_METHOD")
        if path == CONTROL_PREFIX and method == "GET":
            return json_response(200, {"faults": sorted(self.faults)})
        if path == CONTROL_PREFIX + "/requests" and method == "GET":
            with self.log_lock:
                return json_response(200, list(self.log))
        if path == CONTROL_PREFIX + "/requests" and method == "DELETE":
            with self.log_lock:
                self.log.clear()
            return 204, [], b""
        return scim_error(404, "No such control endpoint")

    # --- calls into scim2-server -------------------------------------------

    def call(
        self,
        environ: dict[str, Any],
        method: str,
        path: str,
        query: str,
        body: bytes,
        internal: bool = False,
    ) -> Response:
        """Serves a request with scim2-server, on a copy of the environ (its
        tenant dispatcher rewrites the path). An internal request (a lookup
        of the middleware's own) keeps only the client's Host and token, not
        its conditional headers."""
        env = dict(environ)
        if internal:
            for key in [k for k in env if k.startswith("HTTP_")]:
                if key not in ("HTTP_HOST", "HTTP_AUTHORIZATION"):
                    del env[key]
        env.update(
            {
                "REQUEST_METHOD": method,
                "PATH_INFO": path,
                "SCRIPT_NAME": "",
                "QUERY_STRING": query,
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body),
            }
        )
        if not body:
            env.pop("CONTENT_TYPE", None)
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = list(headers)
            return lambda data: None

        result = self.app(env, start_response)
        try:
            out = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return captured["status"], captured["headers"], out

    def get_json(self, environ: dict[str, Any], path: str, query: str = "") -> Any:
        status, _, body = self.call(environ, "GET", path, query, b"", internal=True)
        if status != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def user_name_of(self, environ: dict[str, Any], prefix: str, user_id: str) -> str | None:
        user = self.get_json(
            environ, f"{prefix}/Users/{quote(user_id, safe='')}", "attributes=userName"
        )
        name = user.get("userName") if isinstance(user, dict) else None
        return name if isinstance(name, str) else None

    def user_id_by_name(self, environ: dict[str, Any], prefix: str, user_name: str) -> str | None:
        escaped = user_name.replace("\\", "\\\\").replace('"', '\\"')
        listing = self.get_json(
            environ,
            f"{prefix}/Users",
            urlencode({"filter": f'userName eq "{escaped}"', "attributes": "userName"}),
        )
        resources = listing.get("Resources") if isinstance(listing, dict) else None
        for user in resources or []:
            if str(user.get("userName", "")).lower() == user_name.lower():
                return user.get("id")
        return None

    def member_id(self, environ: dict[str, Any], prefix: str, value: str) -> str:
        """The id a member value names: the value itself when it is a user's
        id (or not a user at all, e.g. a group), else the id of the user
        with that userName."""
        if self.user_name_of(environ, prefix, value) is not None:
            return value
        return self.user_id_by_name(environ, prefix, value) or value

    # --- the request --------------------------------------------------------

    def serve(self, environ: dict[str, Any], body: bytes) -> Response:
        route = Route(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD", "GET")
        query = environ.get("QUERY_STRING", "")
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None

        # A real server checks the token first: faults only meet authenticated requests.
        refusal = (
            self.refuse(environ, route, method, query, body, parsed)
            if self.authorized(environ)
            else None
        )
        if refusal is not None:
            response = refusal
        else:
            query, body = self.rewrite_request(environ, route, method, query, body, parsed)
            response = self.call(environ, method, environ.get("PATH_INFO", ""), query, body)
            response = self.rewrite_response(environ, route, response)
        status = response[0]
        if "html-errors" in self.faults and status >= 400:
            response = html_response(
                status, "Something went wrong while processing your request.", 85
            )
        return response

    def refuse(
        self,
        environ: dict[str, Any],
        route: Route,
        method: str,
        query: str,
        body: bytes,
        parsed: Any,
    ) -> Response | None:
        """The error answer of a fault that refuses this request, if any."""
        f = self.faults
        if "content-type-json-only" in f and body:
            if media_type(environ.get("CONTENT_TYPE")) != "application/json":
                return scim_error(415, "The request body must be application/json")

        if "no-patch-groups" in f and method == "PATCH" and route.is_groups() and route.id:
            status, headers, out = scim_error(405, "Method Not Allowed")
            return status, [*headers, ("Allow", "GET, PUT, DELETE")], out

        if (
            "reject-member-path-filter" in f
            and method == "PATCH"
            and route.is_groups()
            and route.id
        ):
            for op in patch_operations(parsed):
                if MEMBER_PATH_FILTER.match(op_path(op)):
                    return scim_error(
                        400, f"Unsupported path: {op_path(op)}", "invalidPath"
                    )

        if "count-500" in f and method == "GET" and route.is_list():
            if any(k == "count" for k, _ in parse_qsl(query, keep_blank_values=True)):
                return scim_error(500, "Internal Server Error")

        if not route.is_users() or not isinstance(parsed, dict):
            return None
        create_or_replace = (method == "POST" and route.id is None) or (
            method == "PUT" and route.id is not None
        )

        if "require-name-formatted" in f and create_or_replace:
            name = parsed.get("name")
            if not (isinstance(name, dict) and name.get("formatted")):
                return scim_error(
                    400, "Attribute 'name.formatted' is required", "invalidValue"
                )

        if "reject-email-type-primary" in f and method in ("POST", "PUT", "PATCH"):
            found = self.email_sub_attributes(method, parsed)
            if found:
                return scim_error(
                    400,
                    f"Attribute 'emails.{found[0]}' is not supported",
                    "invalidValue",
                )

        if (
            "duplicate-500" in f
            and method == "POST"
            and route.id is None
            and route.prefix is not None
            and isinstance(parsed.get("userName"), str)
        ):
            taken = self.user_id_by_name(environ, route.prefix, parsed["userName"])
            if taken is not None:
                message = (
                    "SQLSTATE[23000]: Integrity constraint violation: 1062 Duplicate "
                    f"entry '{parsed['userName']}' for key 'users_username_unique'"
                )
                return html_response(500, message, 20)
        return None

    @staticmethod
    def email_sub_attributes(method: str, parsed: dict[str, Any]) -> list[str]:
        if method != "PATCH":
            return email_attributes(parsed.get("emails") or [])
        found: set[str] = set()
        for op in patch_operations(parsed):
            path = op_path(op).lower()
            value = op.get("value")
            if path.startswith("emails"):
                found |= {a for a in ("type", "primary") if a in path}
                found |= set(email_attributes(value))
            elif not path and isinstance(value, dict):
                found |= set(email_attributes(value.get("emails") or []))
        return sorted(found, key=lambda a: a != "type")

    def rewrite_request(
        self,
        environ: dict[str, Any],
        route: Route,
        method: str,
        query: str,
        body: bytes,
        parsed: Any,
    ) -> tuple[str, bytes]:
        if "no-filter" in self.faults:
            if method == "GET":
                pairs = parse_qsl(query, keep_blank_values=True)
                query = urlencode([(k, v) for k, v in pairs if k != "filter"])
            elif (
                method == "POST"
                and route.resource == ".search"
                and isinstance(parsed, dict)
                and "filter" in parsed
            ):
                parsed = {k: v for k, v in parsed.items() if k != "filter"}
                body = json.dumps(parsed).encode()

        if (
            "members-by-username" in self.faults
            and route.is_groups()
            and route.prefix is not None
        ):
            if method in ("POST", "PUT", "PATCH") and isinstance(parsed, dict):
                translated = self.members_to_ids(environ, route.prefix, method, parsed)
                body = json.dumps(translated).encode()
            elif method == "GET":
                pairs = parse_qsl(query, keep_blank_values=True)
                query = urlencode(
                    [
                        (k, self.member_values_to_ids(environ, route.prefix, v))
                        if k == "filter"
                        else (k, v)
                        for k, v in pairs
                    ]
                )
        return query, body

    def member_values_to_ids(self, environ: dict[str, Any], prefix: str, text: str) -> str:
        """A path or filter with each `members value eq "X"` naming X by id."""
        return MEMBER_VALUE_EQ.sub(
            lambda m: m.group(1) + self.member_id(environ, prefix, m.group(2)) + m.group(3),
            text,
        )

    def members_to_ids(
        self, environ: dict[str, Any], prefix: str, method: str, parsed: dict[str, Any]
    ) -> dict[str, Any]:
        def translate(members: Any) -> Any:
            if not isinstance(members, list):
                members = [members]
            out = []
            for m in members:
                if isinstance(m, dict) and isinstance(m.get("value"), str):
                    m = {**m, "value": self.member_id(environ, prefix, m["value"])}
                out.append(m)
            return out

        if method != "PATCH":
            if "members" in parsed:
                return {**parsed, "members": translate(parsed["members"])}
            return parsed
        ops = []
        for op in patch_operations(parsed):
            path = op_path(op)
            value = op.get("value")
            if path.strip().lower() == "members" and value is not None:
                op = {**op, "value": translate(value)}
            elif not path and isinstance(value, dict) and "members" in value:
                op = {**op, "value": {**value, "members": translate(value["members"])}}
            elif MEMBER_VALUE_EQ.search(path):
                op = {**op, "path": self.member_values_to_ids(environ, prefix, path)}
            ops.append(op)
        return {**parsed, "Operations": ops}

    # --- the response -------------------------------------------------------

    def rewrite_response(
        self, environ: dict[str, Any], route: Route, response: Response
    ) -> Response:
        status, headers, body = response
        if (
            "members-by-username" not in self.faults
            or route.prefix is None
            or status >= 300
            or not body
        ):
            return response
        try:
            parsed = json.loads(body)
        except ValueError:
            return response
        if not isinstance(parsed, dict):
            return response
        names: dict[str, str | None] = {}

        def by_username(resource: Any) -> Any:
            if not isinstance(resource, dict) or GROUP_SCHEMA not in (
                resource.get("schemas") or []
            ):
                return resource
            members = resource.get("members")
            if not isinstance(members, list):
                return resource
            out = []
            for m in members:
                value = m.get("value") if isinstance(m, dict) else None
                if isinstance(value, str):
                    if value not in names:
                        names[value] = self.user_name_of(environ, route.prefix, value)
                    if names[value] is not None:
                        m = {k: v for k, v in m.items() if k != "$ref"}
                        m["value"] = names[value]
                out.append(m)
            return {**resource, "members": out}

        if isinstance(parsed.get("Resources"), list):
            parsed = {**parsed, "Resources": [by_username(r) for r in parsed["Resources"]]}
        else:
            parsed = by_username(parsed)
        return status, headers, json.dumps(parsed).encode()


def without_fault_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--fault":
            skip = True
        elif not arg.startswith("--fault="):
            out.append(arg)
    return out


def main() -> None:
    argv = sys.argv[1:]
    parser = cli.build_parser()
    parser.prog = "scim_faults"
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=sorted(FAULTS),
        help="Switch on a fault mode. Can be repeated.",
    )
    args = parser.parse_args(argv)

    # scim2-server's own command builds the provider, tenants and storage;
    # only the server it starts is given the wrapped application.
    make_server = cli.make_server

    def make_faulty_server(host: str, port: int, app: Any, **kwargs: Any) -> Any:
        wrapped = FaultMiddleware(app, args.fault, args.bearer_token or [])
        return make_server(host, port, wrapped, **kwargs)

    cli.make_server = make_faulty_server
    sys.argv = [sys.argv[0], *without_fault_flags(argv)]
    cli.main()


if __name__ == "__main__":
    main()
