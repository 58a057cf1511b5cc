#!/usr/bin/env python3
"""Helper of scripts/peer-docker-py (see there for what the whole does).

    peer-docker-py.py write-config SRC.toml OUT.toml --audit DIR [--socket-mode 0666]
                                   [--copy-plugins DIR]
        A copy of a gateway config with every relative path made absolute (they are
        relative to the config file), the audit store moved to DIR and the mode of
        created unix sockets set; with --copy-plugins, the plugins copied to DIR and
        the copies named.

    peer-docker-py.py classify --direct D.xml --gateway G.xml
                               [--direct-trace D.jsonl] [--gateway-trace G.jsonl]
        Compare the two junit reports of docker-py's integration suite, print one line
        per test, the broken and denied tests, and the summary line. Exit 1 if anything
        is broken.

As a pytest plugin (scripts/peer-docker-py links this file into its run directory as
peer_trace.py and runs pytest with `-p peer_trace`): with PEER_TRACE_FILE set, every
HTTP response of status >= 400 (and every request that got no response) is appended
to that file as one JSON line, with the test that made it, so that a failure can be
traced to the request the gateway or the engine refused.
"""

import argparse
import json
import os
import re
import sys
import time

# --------------------------------------------------------------------------------------
# The rules whose refusals are intended. Keep in step with the plugins' sources:
# baseline's RULES (plugins/baseline/src/lib.rs), tenancy's "[owner]" and "[image-owner]"
# (plugins/tenancy/src/lib.rs) and labels' tags (plugins/labels/src/lib.rs).
# baseline's "[body]" (a body it cannot read) is deliberately not here: docker-py sends
# valid bodies, so such a refusal is a gap in the plugin, not an intended rule.
RULES = {
    "baseline": [
        "privileged", "host-namespaces", "bind-mounts", "volume-options", "volumes-from",
        "capabilities", "devices", "security-options", "sysctls", "runtime", "host-admin",
        "read-only",
    ],
    "tenancy": ["owner", "image-owner"],
    "labels": ["schema", "gateway-owned", "convention", "namespace"],
}
RULE_RE = re.compile(
    r"\b(" + "|".join(RULES) + r"): \[(" + "|".join(sorted({r for v in RULES.values() for r in v})) + r")\]"
)


def rule_denial(text):
    """The first intended-rule refusal in text, as 'plugin: [rule] message...', or None."""
    if not text:
        return None
    for m in RULE_RE.finditer(text):
        plugin, rule = m.group(1), m.group(2)
        if rule in RULES[plugin]:
            rest = text[m.start():].splitlines()[0]
            # Without the closing of docker-py's `Forbidden ("...")` (and pytest's quotes).
            return re.sub(r'"\)"?$', "", rest)
    return None


# --------------------------------------------------------------------------------------
# pytest plugin part (only active when PEER_TRACE_FILE is set).
#
# Records, one JSON line each, with the test ("test") and the phase ("phase": setup,
# call, teardown, cleanup) they happened in:
# - "kind": "http": a response of status >= 400, or a request that got no response;
# - "kind": "failure": an exception that failed a phase. For unittest-style tests (all of
#   docker-py's) setUp, the test method and tearDown all run in pytest's call phase; they
#   are recorded apart ("setUp", "body", "tearDown"), so that a test whose body passed but
#   whose tearDown was refused can be told from one whose body failed;
# - "kind": "cleanup": what was left behind by a test and removed after it (PEER_CLEANUP=1).
#
# The cleanup: after each test, the containers, networks and volumes that appeared while
# it ran and are still there are removed, with the test's own credentials. docker-py's
# tearDown does this itself, unless an earlier step of it failed (through the gateway:
# swarm leave refused by baseline [host-admin] before the cleanup of api_network_test), and
# then leftovers (names in use, address pools taken) would fail later tests for reasons
# that are not theirs.

_current = {"key": "<session>", "phase": "session"}


def _key_of_nodeid(nodeid):
    """The junit key (classname::name) pytest's junitxml gives a test, from its node id."""
    names = nodeid.split("::")
    path = names[0]
    if path.endswith(".py"):
        path = path[:-3]
    classname = ".".join([path.replace("/", ".")] + names[1:-1])
    return f"{classname}::{names[-1]}"


def _record(entry):
    path = os.environ.get("PEER_TRACE_FILE")
    if not path:
        return
    entry.setdefault("test", _current["key"])
    entry.setdefault("phase", _current["phase"])
    entry["t"] = round(time.time(), 3)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _exception_line(e):
    t = type(e)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return f"{name}: {e}"[:3000]


def _message_of(resp):
    try:
        body = resp.content
    except Exception as e:  # noqa: BLE001 - a broken stream is worth recording as such
        return f"<body unreadable: {type(e).__name__}: {e}>"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        value = json.loads(text)
        if isinstance(value, dict) and "message" in value:
            return str(value["message"])
    except ValueError:
        pass
    return text.strip()[:500]


def _active():
    return bool(os.environ.get("PEER_TRACE_FILE"))


def pytest_configure(config):
    if not _active():
        return
    import requests

    original = requests.Session.send
    if getattr(original, "_peer_trace", False):
        return

    def send(self, request, **kwargs):
        try:
            resp = original(self, request, **kwargs)
        except Exception as e:
            _record({
                "kind": "http", "method": request.method, "url": request.url, "status": None,
                "message": f"{type(e).__name__}: {e}"[:500],
            })
            raise
        if resp.status_code >= 400:
            _record({
                "kind": "http", "method": request.method, "url": request.url,
                "status": resp.status_code, "message": _message_of(resp),
            })
        return resp

    send._peer_trace = True
    requests.Session.send = send


def _watch(func, step):
    """func, recording an exception it raises (other than a skip) as a failure of step."""
    import functools
    import unittest

    if getattr(func, "_peer_watch", False):
        return func

    @functools.wraps(func)
    def watched(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except unittest.SkipTest:
            raise
        except Exception as e:
            _record({"kind": "failure", "step": step, "message": _exception_line(e)})
            raise

    watched._peer_watch = True
    return watched


def pytest_collection_modifyitems(session, config, items):
    if not _active():
        return
    import unittest

    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not issubclass(cls, unittest.TestCase):
            continue
        for name, step in (("setUp", "setUp"), ("tearDown", "tearDown")):
            if name in cls.__dict__ or not getattr(getattr(cls, name), "_peer_watch", False):
                setattr(cls, name, _watch(getattr(cls, name), step))
        method = item.name.split("[", 1)[0]
        if method in cls.__dict__:
            setattr(cls, method, _watch(cls.__dict__[method], "body"))


def pytest_runtest_logstart(nodeid, location):
    _current["key"] = _key_of_nodeid(nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _current["key"] = "<between tests>"
    _current["phase"] = "between tests"


def _pytest_hookwrapper():
    import pytest

    return pytest.hookimpl(hookwrapper=True)


def _client():
    import docker
    from docker.utils import kwargs_from_env

    return docker.APIClient(version=os.environ.get("DOCKER_TEST_API_VERSION") or "auto",
                            timeout=60, **kwargs_from_env())


def _objects(client):
    return {
        "container": {c["Id"] for c in client.containers(all=True)},
        "network": {n["Id"] for n in client.networks()},
        "volume": {v["Name"] for v in (client.volumes().get("Volumes") or [])},
    }


_before = {}


def _quietly(f):
    """Run f() without letting a warning (errors in docker-py's suite) or failure escape."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return f()
        except Exception as e:  # noqa: BLE001 - the cleanup must never fail a test
            _record({"kind": "cleanup", "error": _exception_line(e)[:500]})
            return None


def _snapshot():
    client = _client()
    try:
        return _objects(client)
    finally:
        client.close()


def _clean(before):
    client = _client()
    try:
        now = _objects(client)
        left = {kind: sorted(now[kind] - before[kind]) for kind in now}
        removed = []
        for cid in left["container"]:
            try:
                client.remove_container(cid, force=True, v=True)
                removed.append(f"container {cid[:12]}")
            except Exception as e:  # noqa: BLE001
                removed.append(f"container {cid[:12]} (not removed: {e})")
        for nid in left["network"]:
            try:
                client.remove_network(nid)
                removed.append(f"network {nid[:12]}")
            except Exception as e:  # noqa: BLE001
                removed.append(f"network {nid[:12]} (not removed: {e})")
        for name in left["volume"]:
            try:
                client.remove_volume(name, force=True)
                removed.append(f"volume {name[:24]}")
            except Exception as e:  # noqa: BLE001
                removed.append(f"volume {name[:24]} (not removed: {e})")
        if removed:
            _record({"kind": "cleanup", "removed": removed})
    finally:
        client.close()


try:
    _hookwrapper = _pytest_hookwrapper()
except ImportError:  # run as a script, without pytest
    def _hookwrapper(f):
        return f


@_hookwrapper
def pytest_runtest_setup(item):
    _current["phase"] = "setup"
    yield


@_hookwrapper
def pytest_runtest_call(item):
    if _active() and os.environ.get("PEER_CLEANUP") == "1":
        _current["phase"] = "snapshot"
        _before[item.nodeid] = _quietly(_snapshot)
    _current["phase"] = "call"
    yield


@_hookwrapper
def pytest_runtest_teardown(item, nextitem):
    _current["phase"] = "teardown"
    yield
    before = _before.pop(item.nodeid, None)
    if before is not None:
        _current["phase"] = "cleanup"
        _quietly(lambda: _clean(before))


@_hookwrapper
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _active() or call.excinfo is None:
        return
    import pytest
    import unittest

    # Skips are no failures; an xfail-marked test's exception is (its reason is worth seeing).
    if call.excinfo.errisinstance((pytest.skip.Exception, unittest.SkipTest)):
        return
    _record({"kind": "failure", "step": call.when, "phase": call.when,
             "message": call.excinfo.exconly()[:3000]})


# --------------------------------------------------------------------------------------
# write-config


def write_config(args):
    import tomllib

    src = os.path.abspath(args.src)
    base = os.path.dirname(src)
    with open(src, "rb") as f:
        parsed = tomllib.load(f)
    if "audit" not in parsed:
        print(f"peer-docker-py: {src} has no [audit] table; the copy gets none either", file=sys.stderr)

    table = None
    out = []
    seen_mode = False
    kv = re.compile(r'^(\s*)([A-Za-z_]+)(\s*=\s*)"([^"]*)"(.*)$')
    for line in open(src, encoding="utf-8").read().splitlines():
        header = re.match(r"^\s*(\[\[?[^\]]+\]\]?)", line)
        if header:
            if table == "[server]" and not seen_mode:
                out.append(f'socket_mode = "{args.socket_mode}"')
                seen_mode = True
            table = header.group(1).replace(" ", "")
        m = kv.match(line)
        if m:
            indent, key, eq, value, rest = m.groups()
            if table == "[audit]" and key == "path":
                value = os.path.abspath(args.audit)
            elif table == "[server]" and key == "socket_mode":
                value = args.socket_mode
                seen_mode = True
            elif (table, key) == ("[[plugins]]", "path") and args.copy_plugins:
                # A copy: a rebuild during the run does not change what was tested.
                import shutil
                original = value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))
                os.makedirs(args.copy_plugins, exist_ok=True)
                value = os.path.join(os.path.abspath(args.copy_plugins), os.path.basename(original))
                if os.path.exists(original):
                    shutil.copyfile(original, value)
            elif (table, key) in {("[[plugins]]", "path"), ("[server]", "tokens_file"),
                                  ("[server.tls]", "cert"), ("[server.tls]", "key"),
                                  ("[server.tls]", "client_ca"), ("[engine]", "cert_path")}:
                if not os.path.isabs(value):
                    value = os.path.normpath(os.path.join(base, value))
            line = f'{indent}{key}{eq}"{value}"{rest}'
        out.append(line)
    if table == "[server]" and not seen_mode:
        out.append(f'socket_mode = "{args.socket_mode}"')
    text = "\n".join(out) + "\n"

    # The copy must say what the original says, but for the paths rewritten.
    copy = tomllib.loads(text)
    for p, q in zip(parsed.get("plugins", []), copy.get("plugins", [])):
        if p.get("name") != q.get("name") or not os.path.isabs(q.get("path", "/")):
            sys.exit("peer-docker-py: the config copy lost track of the plugin paths")
        if not os.path.exists(q["path"]):
            sys.exit(f"peer-docker-py: plugin {q['name']}: {q['path']} does not exist (just plugins)")
    if "audit" in parsed and copy["audit"]["path"] != os.path.abspath(args.audit):
        sys.exit("peer-docker-py: could not move the audit store in the config copy")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)


# --------------------------------------------------------------------------------------
# classify


def read_junit(path):
    """{key: (outcome, first line of message, full text)} of one junit report."""
    import xml.etree.ElementTree as ET

    results = {}
    if not path or not os.path.exists(path):
        return results
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        print(f"peer-docker-py: {path}: {e}", file=sys.stderr)
        return results
    for case in root.iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message, text = "passed", "", ""
        for child in case:
            if child.tag in ("failure", "error"):
                # A failure and a teardown error may both be there; the first one counts.
                if outcome not in ("failed", "error"):
                    outcome = "failed" if child.tag == "failure" else "error"
                    message = child.get("message") or ""
                    text = (child.text or "")
                else:
                    text += "\n" + (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
                message = child.get("message") or ""
        if key in results:
            # The same test twice: a call failure and a teardown error. The first failure counts.
            o, m, t = results[key]
            if o in ("failed", "error"):
                results[key] = (o, m, t + "\n" + message + "\n" + text)
                continue
            if outcome == "passed":
                continue
        results[key] = (outcome, message, text)
    return results


def read_trace(path):
    """{test key: [records of the pytest plugin, in order]} of one pass."""
    trace = {}
    if not path or not os.path.exists(path):
        return trace
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            trace.setdefault(e.get("test", "?"), []).append(e)
    return trace


# Path segments of the Engine API that are not names or ids.
_WORDS = set("""
    _ping archive attach auth build changes commit configs connect containers create df
    disconnect disable distribution enable events exec export get grpc history images info
    init inspect join json kill leave load logs networks nodes pause plugins privileges
    prune pull push rename resize restart rotate search secrets services session set start
    stats stop swarm system tag tasks top unlock unlockkey unpause update upgrade version
    volumes wait ws
""".split())


def request_line(e):
    """'METHOD /path?query' of a traced request, without the host and the API version."""
    url = e.get("url") or ""
    url = re.sub(r"^[a-z+]+://[^/]*", "", url)
    url = re.sub(r"^/v1\.\d+", "", url)
    return f"{e.get('method')} {url}"


def shape(e):
    """A traced error, with the parts that differ from run to run (ids, names) left out."""
    method, _, path = request_line(e).split("?", 1)[0].partition(" ")
    segments = [x if x in _WORDS else "*" for x in path.split("/")[1:]]
    return (method, "/" + "/".join(segments), e.get("status"))


def first_line(text):
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def error_line(message, text):
    """The most telling line of a failure: the exception raised, else the message."""
    for source in (message, text):
        for line in (source or "").splitlines():
            s = line.strip()
            if s.startswith("E "):
                s = s[1:].strip()
            if re.search(r"docker\.errors\.\w+:|requests\.exceptions\.\w+:|\bAPIError\b|Error response", s):
                return s
    return first_line(message) or first_line(text)


def assertion_detail(message):
    """pytest's lines saying how an assertion's two sides differ, if it gave any."""
    lines = [x.strip() for x in (message or "").splitlines()]
    out = []
    for i, line in enumerate(lines):
        if line in ("Differing items:", "Left contains 1 more item:", "Right contains 1 more item:") \
                or re.match(r"^(Left|Right) contains \d+ more items?:$", line) \
                or re.match(r"^At index \d+ diff:", line):
            out.append(line + (" " + lines[i + 1] if i + 1 < len(lines) and line.endswith(":") else ""))
    return "; ".join(out)


def short(s, n=400):
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def http_errors(records):
    return [e for e in records if e.get("kind", "http") == "http"]


def classify(args):
    direct = read_junit(args.direct)
    gateway = read_junit(args.gateway)
    dtrace = read_trace(args.direct_trace)
    gtrace = read_trace(args.gateway_trace)
    if not direct:
        print(f"peer-docker-py: no test results in {args.direct}", file=sys.stderr)
        return 2

    passed, denied, broken, not_direct = [], [], [], []
    lines = []
    for key in sorted(direct):
        d_outcome, d_msg, _ = direct[key]
        if d_outcome != "passed":
            not_direct.append(key)
            lines.append((f"{d_outcome} directly", key))
            continue
        g = gateway.get(key)
        if g is None:
            broken.append({"test": key, "error": "no result through the gateway (the pass was cut short?)",
                           "extra": [], "notes": []})
            lines.append(("broken", key))
            continue
        g_outcome, g_msg, g_text = g
        if g_outcome == "passed":
            passed.append(key)
            lines.append(("passed", key))
            continue
        records = gtrace.get(key, [])
        # What the gateway answered that the engine did not, in this test.
        seen = {shape(e) for e in http_errors(dtrace.get(key, []))}
        extra = [e for e in http_errors(records) if shape(e) not in seen]
        failures = [e for e in records if e.get("kind") == "failure"]
        notes = []
        step = None
        if failures:
            step = failures[0].get("step")
            reason = failures[0].get("message") or ""
            if g_outcome == "skipped":
                notes.append(f"reported as {first_line(g_msg) or 'skipped'} (an xfail) through the gateway")
        elif g_outcome == "skipped":
            reason = f"skipped through the gateway: {first_line(g_msg)}"
        else:
            reason = g_msg + "\n" + g_text
        rule = rule_denial(reason)
        if not rule and g_outcome == "skipped" and not failures:
            # A test that turned a refusal into a skip.
            for e in extra:
                rule = rule_denial(e.get("message") or "")
                if rule:
                    notes.append(f"skipped after {request_line(e).split('?')[0]} was refused")
                    break
        if step in ("tearDown", "teardown"):
            notes.append("the test's body passed; its tearDown failed")
        left = [r for e in records if e.get("kind") == "cleanup" for r in e.get("removed", [])]
        if left:
            notes.append("left behind (removed after it): " + ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
        if rule:
            denied.append({"test": key, "rule": rule, "extra": extra, "notes": notes})
            lines.append(("denied", key))
        else:
            why = error_line(reason, "") if failures or g_outcome != "skipped" else reason
            detail = assertion_detail(reason)
            if detail:
                why += " -- " + detail
            for e in extra:
                r = rule_denial(e.get("message") or "")
                if r:
                    notes.append(f"after an intended refusal of {request_line(e).split('?')[0]}: {r}")
                    break
            broken.append({"test": key, "error": why, "extra": extra, "notes": notes})
            lines.append(("broken", key))

    for status, key in lines:
        print(f"{status:<18} {key}")

    def show_extra(extra):
        for e in extra[:6]:
            status = e.get("status") if e.get("status") is not None else "no response"
            where = f" [{e.get('phase')}]" if e.get("phase") not in (None, "call") else ""
            print(f"      {status} {short(request_line(e), 160)}{where}: {short(e.get('message') or '', 300)}")
        if len(extra) > 6:
            print(f"      ... and {len(extra) - 6} more")

    if broken:
        print()
        print(f"broken ({len(broken)}): passed directly, failed through the gateway, not by an intended rule")
        for b in broken:
            print(f"  {b['test']}")
            print(f"    {short(b['error'], 700)}")
            for n in b["notes"]:
                print(f"    ({short(n, 400)})")
            if b["extra"]:
                print("    error responses through the gateway that the engine did not give directly:")
                show_extra(b["extra"])
    if denied:
        print()
        only_teardown = sum(1 for d in denied if "the test's body passed; its tearDown failed" in d["notes"])
        print(f"denied by rule ({len(denied)}" + (f"; {only_teardown} of them only in their tearDown, after the test's body passed"
                                                 if only_teardown else "") + "):")
        for d in denied:
            print(f"  {d['test']}")
            print(f"    {short(d['rule'])}")
            for n in d["notes"]:
                print(f"    ({short(n, 400)})")
            others = [e for e in d["extra"] if not rule_denial(e.get("message") or "")]
            if others:
                print("    and other error responses only through the gateway:")
                show_extra(others)
        tally = {}
        for d in denied:
            m = re.sub(r'"[^"]*"', '"..."', d["rule"].split('")')[0])
            tally[m] = tally.get(m, 0) + 1
        print()
        print("denied by rule, by message:")
        for m, n in sorted(tally.items(), key=lambda kv: -kv[1]):
            print(f"  {n:4} {short(m, 200)}")
    print()
    print(f"docker-py: {len(passed)} passed, {len(denied)} denied-by-rule, {len(broken)} broken "
          f"({len(not_direct)} failed or skipped directly)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({
                "passed": passed,
                "denied": denied,
                "broken": broken,
                "not_direct": [{"test": k, "outcome": direct[k][0], "message": first_line(direct[k][1])}
                               for k in not_direct],
            }, f, indent=1)
    return 1 if broken else 0


def main():
    p = argparse.ArgumentParser(prog="peer-docker-py.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-config")
    w.add_argument("src")
    w.add_argument("out")
    w.add_argument("--audit", required=True)
    w.add_argument("--socket-mode", default="0666")
    w.add_argument("--copy-plugins", metavar="DIR", help="copy the plugins here and name the copies")
    c = sub.add_parser("classify")
    c.add_argument("--direct", required=True)
    c.add_argument("--gateway", required=True)
    c.add_argument("--direct-trace")
    c.add_argument("--gateway-trace")
    c.add_argument("--json", help="also write the classification as JSON here")
    args = p.parse_args()
    if args.cmd == "write-config":
        write_config(args)
        return 0
    return classify(args)


if __name__ == "__main__":
    sys.exit(main())
