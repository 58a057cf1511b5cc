"""Write portcullis gateway plugins in Python.

A plugin is a WebAssembly component built with componentize-py from the WIT contract in
``sdk/wit/0.2.0/plugin.wit`` (``portcullis:plugin@0.2.0``). This module wraps the generated bindings:
subclass :class:`Plugin`, override the hooks you need, and export it::

    from portcullis_plugin import Plugin, Request, allow, deny, export

    class NoPrivileged(Plugin):
        name = "no-privileged"

        def on_request(self, req: Request):
            create = req.container_create()
            if create is not None and create.privileged:
                return deny("privileged containers are not allowed")
            return allow()

    Policy = export(NoPrivileged)   # componentize-py looks for `Policy`

Every request runs on a fresh instance: the gateway calls ``init`` (which builds your class
from its configuration) and then the hook. A request's ``on_response`` usually runs in the
instance its ``on_request`` ran in, but may get a fresh one; nothing survives from one request
to the next.

The module imports the bindings lazily, so a plugin's logic can also be unit-tested with plain
``python3`` (see :func:`request_from_json` and :func:`verdict_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "Plugin", "Request", "Response", "Caller", "Target", "ContainerCreate", "Verdict",
    "Patch", "allow", "deny", "export", "log", "request_from_json", "verdict_json",
]

VERSION = "0.2.0"
"""The contract version this module speaks."""


# ---------------------------------------------------------------------------------------------
# What a plugin sees
# ---------------------------------------------------------------------------------------------

@dataclass
class Caller:
    """Who is making the request."""
    user: str = ""
    groups: List[str] = field(default_factory=list)
    # "none", "peer-credentials", "mutual-tls" or "token".
    auth: str = "none"
    peer: str = ""

    def in_group(self, group: str) -> bool:
        return group in self.groups


@dataclass
class Target:
    """The existing object a request acts on, as the engine reports it."""
    kind: str = ""
    id: str = ""
    name: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)
    owner: Optional[str] = None
    """For a ``tag``: the repository's owner by the gateway's own record."""


@dataclass
class Reference:
    """An object the request body refers to (a volume mounted, a network joined, ...):
    ``field`` is where (``HostConfig.Binds[0]``), ``object`` is ``None`` when the engine
    knows no such object."""
    field: str = ""
    kind: str = ""
    name: str = ""
    object: Optional[Target] = None


@dataclass
class ContainerCreate:
    """The fields of a ``container.create`` body policies usually need; ``raw`` has the rest.

    Field names are Docker's (``Image``, ``Labels``, ``HostConfig.Privileged``); the gateway
    hands plugins the canonical body, so they are matched exactly. ``null`` reads as empty.
    """
    image: str
    labels: Dict[str, str]
    privileged: bool
    raw: Dict[str, Any]


@dataclass
class Request:
    """A request exactly as the engine will act on it."""
    method: str = "GET"
    path: str = "/"
    endpoint: str = ""
    id: int = 0
    api_version: Optional[str] = None
    object_id: Optional[str] = None
    query_pairs: List[Tuple[str, str]] = field(default_factory=list)
    header_pairs: List[Tuple[str, str]] = field(default_factory=list)
    # The body as canonical JSON text, for endpoints that take JSON.
    body: Optional[str] = None
    caller: Caller = field(default_factory=Caller)
    target: Optional[Target] = None
    related: List[Reference] = field(default_factory=list)

    def query(self, name: str) -> Optional[str]:
        """The first value of the query parameter ``name``."""
        return next((v for k, v in self.query_pairs if k == name), None)

    def header(self, name: str) -> Optional[str]:
        """The first value of the header ``name`` (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.header_pairs if k.lower() == name), None)

    def json_body(self) -> Any:
        """The body parsed as JSON; ``None`` when there is none or it is not JSON."""
        if self.body is None:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def target_label(self, key: str) -> Optional[str]:
        """The value of label ``key`` on the target object, if any."""
        return self.target.labels.get(key) if self.target else None

    def container_create(self) -> Optional[ContainerCreate]:
        """The container configuration of a ``container.create`` request; ``None`` for other
        endpoints and for a body that is not a JSON object."""
        if self.endpoint != "container.create":
            return None
        body = self.json_body()
        if not isinstance(body, dict):
            return None
        labels = body.get("Labels")
        host = body.get("HostConfig")
        image = body.get("Image")
        return ContainerCreate(
            image=image if isinstance(image, str) else "",
            labels={k: v for k, v in labels.items() if isinstance(v, str)} if isinstance(labels, dict) else {},
            privileged=isinstance(host, dict) and host.get("Privileged") is True,
            raw=body,
        )


@dataclass
class Response:
    """The engine's answer."""
    status: int = 200
    header_pairs: List[Tuple[str, str]] = field(default_factory=list)
    body: Optional[str] = None

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((v for k, v in self.header_pairs if k.lower() == name), None)

    def json_body(self) -> Any:
        if self.body is None:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


# ---------------------------------------------------------------------------------------------
# What a plugin answers
# ---------------------------------------------------------------------------------------------

@dataclass
class Patch:
    """An RFC 6902 JSON Patch on the body plus header and query edits, built fluently:
    ``Patch().add("/Labels/team", "a").set_header("x-a", "1")``."""
    ops: List[Dict[str, Any]] = field(default_factory=list)
    # ("set", name, value) or ("remove", name, None)
    headers: List[Tuple[str, str, Optional[str]]] = field(default_factory=list)
    query: List[Tuple[str, str, Optional[str]]] = field(default_factory=list)

    def add(self, path: str, value: Any) -> "Patch":
        self.ops.append({"op": "add", "path": path, "value": value})
        return self

    def replace(self, path: str, value: Any) -> "Patch":
        self.ops.append({"op": "replace", "path": path, "value": value})
        return self

    def remove(self, path: str) -> "Patch":
        self.ops.append({"op": "remove", "path": path})
        return self

    def test(self, path: str, value: Any) -> "Patch":
        self.ops.append({"op": "test", "path": path, "value": value})
        return self

    def set_header(self, name: str, value: str) -> "Patch":
        self.headers.append(("set", name, value))
        return self

    def remove_header(self, name: str) -> "Patch":
        self.headers.append(("remove", name, None))
        return self

    def set_query(self, name: str, value: str) -> "Patch":
        self.query.append(("set", name, value))
        return self

    def remove_query(self, name: str) -> "Patch":
        self.query.append(("remove", name, None))
        return self


def json_pointer(*segments: str) -> str:
    """A JSON Pointer from raw segments: ``json_pointer("Labels", "a/b")`` is ``/Labels/a~1b``."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


@dataclass
class Verdict:
    """``kind`` is ``"allow"``, ``"deny"`` or ``"patch"``."""
    kind: str
    status: int = 403
    message: str = ""
    patch: Optional[Patch] = None


def allow() -> Verdict:
    """Let the request (or response) pass unchanged."""
    return Verdict("allow")


def deny(message: str, status: int = 403) -> Verdict:
    """Refuse it; the docker CLI shows ``Error response from daemon: <plugin>: <message>``."""
    return Verdict("deny", status=status, message=message)


def patch(p: Patch) -> Verdict:
    """Let it pass with these changes (request patches need ``phase = "mutate"``)."""
    return Verdict("patch", patch=p)


# ---------------------------------------------------------------------------------------------
# The plugin
# ---------------------------------------------------------------------------------------------

class Plugin:
    """Subclass it. ``__init__`` receives the ``config`` table (a dict, ``{}`` when there is
    none): raise ``ValueError`` with a clear message to refuse it — the gateway then does not
    start. Override the hooks you implement; the others allow everything and are not called
    (the hooks reported to the gateway are exactly the overridden ones)."""

    name: str = "plugin"
    version: str = "0.1.0"

    def __init__(self, config: Dict[str, Any]) -> None:
        self.config = config

    def on_request(self, req: Request) -> Verdict:
        return allow()

    def on_response(self, req: Request, resp: Response) -> Verdict:
        return allow()

    def on_audit(self, req: Request, record: Dict[str, Any]) -> Verdict:
        return allow()

    @classmethod
    def hooks(cls) -> List[str]:
        """The hooks this class overrides: ``request``, ``response``, ``audit``."""
        return [h for h in ("request", "response", "audit")
                if getattr(cls, "on_" + h) is not getattr(Plugin, "on_" + h)]


class log:
    """Lines in the gateway's log, tagged with the plugin's name and the request id.
    Outside the sandbox (unit tests) they go to stderr."""

    @staticmethod
    def _write(level: str, message: str) -> None:
        try:
            from wit_world.imports import host  # type: ignore
        except ImportError:
            import sys
            print(f"[{level}] {message}", file=sys.stderr)
            return
        host.log(getattr(host.Level, level.upper()), message)

    @staticmethod
    def trace(message: str) -> None: log._write("trace", message)

    @staticmethod
    def debug(message: str) -> None: log._write("debug", message)

    @staticmethod
    def info(message: str) -> None: log._write("info", message)

    @staticmethod
    def warn(message: str) -> None: log._write("warn", message)

    @staticmethod
    def error(message: str) -> None: log._write("error", message)


# ---------------------------------------------------------------------------------------------
# Conversions from and to the generated bindings
# ---------------------------------------------------------------------------------------------

_AUTH = {0: "none", 1: "peer-credentials", 2: "mutual-tls", 3: "token"}


def _target(t: Any) -> Optional[Target]:
    return None if t is None else Target(t.kind, t.id, t.name, {p.name: p.value for p in t.labels}, t.owner)


def _request(r: Any) -> Request:
    return Request(
        method=r.method, path=r.path, endpoint=r.endpoint, id=r.id,
        api_version=r.api_version, object_id=r.object_id,
        query_pairs=[(p.name, p.value) for p in r.query],
        header_pairs=[(p.name, p.value) for p in r.headers],
        body=r.body,
        caller=Caller(r.caller.user, list(r.caller.groups), _AUTH.get(r.caller.auth.value, "none"), r.caller.peer),
        target=_target(r.target),
        related=[Reference(x.field, x.kind, x.name, _target(x.object)) for x in r.related],
    )


def _response(r: Any) -> Response:
    return Response(r.status, [(p.name, p.value) for p in r.headers], r.body)


def _verdict(v: Verdict) -> Any:
    from wit_world.imports import types as t  # type: ignore
    if not isinstance(v, Verdict):
        raise TypeError(f"a hook must return a Verdict (allow(), deny(..), patch(..)), not {v!r}")
    if v.kind == "allow":
        return t.Verdict_Allow()
    if v.kind == "deny":
        return t.Verdict_Deny(t.Denial(status=v.status, message=v.message))
    p = v.patch or Patch()

    def edits(es):
        return [t.Edit_Set(t.Pair(n, val)) if op == "set" else t.Edit_Remove(n) for op, n, val in es]
    return t.Verdict_Patch(t.Patch(
        body=json.dumps(p.ops) if p.ops else None, headers=edits(p.headers), query=edits(p.query)))


def export(cls: type) -> type:
    """The class componentize-py exports as ``portcullis:plugin/policy``: assign it to
    ``Policy`` in the plugin's main module (``Policy = export(MyPlugin)``)."""
    from componentize_py_types import Err  # type: ignore
    from wit_world.imports import types as t  # type: ignore

    state: Dict[str, Any] = {}

    def current() -> Plugin:
        plugin = state.get("plugin")
        if plugin is None:
            raise RuntimeError("a hook ran before init")
        return plugin

    class Policy:
        def describe(self) -> Any:
            hooks = t.Hooks(0)
            for h in cls.hooks():
                hooks |= getattr(t.Hooks, h.upper())
            return t.Info(name=cls.name, version=cls.version, hooks=hooks)

        def init(self, config: str) -> None:
            try:
                parsed = json.loads(config) if config.strip() else {}
            except ValueError as e:
                raise Err(f"the plugin configuration is not valid JSON: {e}")
            if parsed is None:
                parsed = {}
            try:
                state["plugin"] = cls(parsed)
            except (ValueError, TypeError, KeyError) as e:
                raise Err(str(e))

        def on_request(self, request: Any) -> Any:
            return _verdict(current().on_request(_request(request)))

        def on_response(self, request: Any, response: Any) -> Any:
            return _verdict(current().on_response(_request(request), _response(response)))

        def on_audit(self, request: Any, audit_record: str) -> Any:
            return _verdict(current().on_audit(_request(request), json.loads(audit_record)))

    return Policy


# ---------------------------------------------------------------------------------------------
# Testing without the sandbox
# ---------------------------------------------------------------------------------------------

def request_from_json(text: str) -> Request:
    """A :class:`Request` from the request file format of ``portcullis plugin test`` (every
    field optional; ``body`` a JSON value or JSON text; pairs as ``[name, value]`` or
    ``{"name", "value"}``). The endpoint must be given (the gateway derives it from the path)."""
    d = json.loads(text)

    def pairs(items):
        return [tuple(p) if isinstance(p, list) else (p["name"], p["value"]) for p in items or []]
    body = d.get("body")
    c = d.get("caller") or {}
    t = d.get("target")
    return Request(
        method=d.get("method", "GET"), path=d.get("path", "/"), endpoint=d.get("endpoint", ""),
        id=d.get("id", 0), api_version=d.get("api_version"), object_id=d.get("object_id"),
        query_pairs=pairs(d.get("query")), header_pairs=pairs(d.get("headers")),
        body=body if isinstance(body, str) or body is None else json.dumps(body),
        caller=Caller(c.get("user", "test"), c.get("groups", []), c.get("auth", "none"), c.get("peer", "test")),
        target=None if t is None else Target(t.get("kind", ""), t.get("id", ""), t.get("name"), t.get("labels", {}), t.get("owner")),
    )


def verdict_json(v: Verdict) -> Dict[str, Any]:
    """A verdict as ``portcullis plugin test`` prints it."""
    if v.kind == "allow":
        return {"verdict": "allow"}
    if v.kind == "deny":
        return {"verdict": "deny", "status": v.status, "message": v.message}
    p = v.patch or Patch()

    def edits(es):
        return [{"set": [n, val]} if op == "set" else {"remove": n} for op, n, val in es]
    return {"verdict": "patch", "body": p.ops or None, "headers": edits(p.headers), "query": edits(p.query)}
