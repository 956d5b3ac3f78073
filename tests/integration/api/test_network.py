"""network_policy allowlists through the real server and the openai SDK: code in the container reaches allowed
domains through the egress proxy (urllib, requests, httpx, curl, unchanged), nothing else; secrets reach their
own domain only and are never visible to the code, in any answer or in the log. All on loopback: every name the
proxy may use is mapped by CELLBOX_EGRESS_RESOLVE to a local echo server, and refused names are never looked up."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.echo_servers import BIG, UpstreamAuthority, echo_server
from tests.integration.api.server import Server, check_error, client, raw
from tests.upstream import ScriptedUpstream

SECRET = "s3cret-value-9f2c"
MAX_BYTES = BIG // 2


@pytest.fixture(scope="module")
def net_server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Server]:
    certs = UpstreamAuthority(tmp_path_factory.mktemp("upstream-certs"))
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(echo_server("api", certs.server_context("api.test")))
        other = stack.enter_context(echo_server("other", certs.server_context("other.test")))
        plain = stack.enter_context(echo_server("plain"))
        resolve = f"api.test=127.0.0.1:{api},other.test=127.0.0.1:{other},plain.test=127.0.0.1:{plain}"
        running = Server(tmp_path_factory.mktemp("net-data"), CELLBOX_EGRESS_PERMIT="*.test, localhost",
                         CELLBOX_UPSTREAM_BASE_URL=upstream.url,
                         CELLBOX_EGRESS_RESOLVE=resolve, CELLBOX_EGRESS_CA_BUNDLE=str(certs.bundle),
                         CELLBOX_EGRESS_MAX_BYTES=str(MAX_BYTES)).start()
        running.echo_ports = (api, other, plain)  # type: ignore[attr-defined]
        yield running
        log = running.stop()
        assert SECRET not in log


@pytest.fixture
def net(net_server: Server) -> Iterator[openai.OpenAI]:
    with client(net_server) as sdk:
        yield sdk


POLICY = {"type": "allowlist", "allowed_domains": ["api.test", "other.test", "plain.test", "localhost"],
          "domain_secrets": [{"domain": "api.test", "name": "API_KEY", "value": SECRET}]}


@pytest.fixture
def box(net: openai.OpenAI) -> Iterator[str]:
    made = net.containers.create(name="net", network_policy=POLICY)  # type: ignore[arg-type]
    yield made.id
    with contextlib.suppress(openai.NotFoundError):
        net.containers.delete(made.id)


def run(server: Server, cid: str, code: str) -> str:
    with raw(server) as http:
        done = http.post(f"/v1/containers/{cid}/execute", json={"code": code, "timeout": 120})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed", body
    return "".join(o["logs"] for o in body["outputs"] if o["type"] == "logs")


def echoed(server: Server, cid: str, code: str) -> dict[str, Any]:
    return json.loads(run(server, cid, code).strip().splitlines()[-1])


def test_the_container_object_shows_the_allowlist_and_never_the_secrets(net_server: Server, net: openai.OpenAI,
                                                                       box: str) -> None:
    shown = net.containers.retrieve(box)
    assert shown.network_policy is not None
    assert shown.network_policy.type == "allowlist"
    assert shown.network_policy.allowed_domains == ["api.test", "other.test", "plain.test", "localhost"]
    with raw(net_server) as http:
        for path in (f"/v1/containers/{box}", "/v1/containers", "/health"):
            answer = http.get(path).text
            assert SECRET not in answer
            assert "domain_secrets" not in answer
        assert http.get(f"/v1/containers/{box}").json()["egress"]["max_bytes"] == MAX_BYTES


def test_allowed_https_and_http_work_with_the_usual_clients(net_server: Server, box: str) -> None:
    got = echoed(net_server, box, "import urllib.request, json\n"
                 "print(urllib.request.urlopen('https://api.test/u').read().decode())")
    assert (got["server"], got["path"]) == ("api", "/u")
    got = echoed(net_server, box, "import requests\nprint(requests.get('https://other.test/r').text)")
    assert (got["server"], got["path"]) == ("other", "/r")
    got = echoed(net_server, box, "import httpx\nprint(httpx.get('http://plain.test/h').text)")
    assert (got["server"], got["path"]) == ("plain", "/h")
    got = echoed(net_server, box, "import subprocess\n"
                 "print(subprocess.run(['curl', '-sS', 'https://api.test/c'], capture_output=True, text=True,"
                 " check=True).stdout)")
    assert (got["server"], got["path"]) == ("api", "/c")


def test_a_secret_reaches_its_own_domain_only_and_the_code_never_sees_it(net_server: Server, box: str) -> None:
    send = ("import os, requests\n"
            "r = requests.get('https://{host}/s', headers={{'Authorization': 'Bearer ' + os.environ['API_KEY'],"
            " 'X-Key': os.environ['API_KEY']}})\nprint(r.text)")
    mine = echoed(net_server, box, send.format(host="api.test"))
    assert mine["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert mine["headers"]["X-Key"] == SECRET
    theirs = echoed(net_server, box, send.format(host="other.test"))
    placeholder = theirs["headers"]["X-Key"]
    assert SECRET not in json.dumps(theirs)
    assert placeholder.startswith("cellbox-secret-")
    plain = echoed(net_server, box, send.format(host="api.test").replace("https://api.test", "http://plain.test"))
    assert SECRET not in json.dumps(plain)  # never over plain HTTP
    seen = run(net_server, box, "import os\nprint(repr(dict(os.environ)))\nprint(open('/proc/self/environ').read())")
    assert SECRET not in seen
    assert placeholder in seen


def test_everything_else_is_refused_with_a_reason(net_server: Server, box: str) -> None:
    attempt = ("import requests\ntry:\n    r = requests.get({url!r}, timeout=60)\n    print(r.status_code, r.text)\n"
               "except requests.RequestException as exc:\n    print('refused:', exc)\n")
    refused = run(net_server, box, attempt.format(url="https://evil.test/"))
    assert "403" in refused
    assert "evil.test" in refused
    refused = run(net_server, box, attempt.format(url="http://evil.test/"))
    assert "403 " in refused
    assert "evil.test" in refused
    api, _, plain = net_server.echo_ports  # type: ignore[attr-defined]
    refused = run(net_server, box, attempt.format(url=f"http://127.0.0.1:{plain}/"))
    assert "403" in refused
    assert "IP address" in refused or "ip address" in refused.lower()
    refused = run(net_server, box, attempt.format(url="http://localhost/"))  # allowed, but it is the loopback
    assert "403" in refused
    assert "address" in refused
    direct = run(net_server, box, "import socket\ntry:\n"
                 f"    socket.create_connection(('127.0.0.1', {api}), timeout=10)\n    print('connected')\n"
                 "except OSError as exc:\n    print('no way:', exc)\n")
    assert direct.startswith("no way:")


def test_the_byte_limit_cuts_a_download_and_refuses_the_next(net_server: Server, box: str) -> None:
    out = run(net_server, box, "import requests\ntry:\n    r = requests.get('https://api.test/big', timeout=60)\n"
              "    print('got', len(r.content))\nexcept requests.RequestException as exc:\n    print('cut:', exc)\n"
              "import urllib.request, urllib.error\ntry:\n    urllib.request.urlopen('http://plain.test/after')\n"
              "except urllib.error.HTTPError as exc:\n    print(exc.code, exc.read().decode())\n")
    assert f"got {BIG}" not in out
    first, last = out.strip().splitlines()
    assert first.startswith("cut:")
    assert last.startswith("403")
    assert "allowance of 524288 bytes" in last


def test_the_operators_permit_list_and_bad_policies_are_400s(net_server: Server, server: Server) -> None:
    with raw(net_server) as http:
        for policy, fragment in (
            ({"type": "allowlist", "allowed_domains": ["pypi.org"]}, "not among the domains this server permits"),
            ({"type": "allowlist", "allowed_domains": ["10.0.0.1"]}, "ip address"),
            ({"type": "allowlist", "allowed_domains": []}, "at least one domain"),
            ({"type": "allowlist", "allowed_domains": ["a.test"],
              "domain_secrets": [{"domain": "b.test", "name": "K", "value": "v"}]}, "not in allowed_domains"),
            ({"type": "allowlist", "allowed_domains": ["a.test"],
              "domain_secrets": [{"domain": "a.test", "name": "PATH", "value": "v"}]}, "cannot be a secret's name"),
        ):
            before = len(http.get("/v1/containers").json()["data"])
            check_error(http.post("/v1/containers", json={"name": "x", "network_policy": policy}), 400, fragment)
            assert len(http.get("/v1/containers").json()["data"]) == before  # nothing half-made
    with raw(server) as http:  # the shared server has no CELLBOX_EGRESS_PERMIT
        policy = {"type": "allowlist", "allowed_domains": ["api.test"]}
        check_error(http.post("/v1/containers", json={"name": "x", "network_policy": policy}), 400, "turned off")
        assert http.get("/health").json()["egress"].startswith("off")


def test_deleting_the_container_ends_its_egress(net_server: Server, net: openai.OpenAI) -> None:
    made = net.containers.create(name="gone", network_policy=POLICY)  # type: ignore[arg-type]
    with raw(net_server) as http:
        assert http.get("/health").json()["egress"]["containers"] >= 1
        before = http.get("/health").json()["egress"]["containers"]
        net.containers.delete(made.id)
        assert http.get("/health").json()["egress"]["containers"] == before - 1


def test_a_container_without_a_policy_has_no_way_out(net_server: Server, net: openai.OpenAI) -> None:
    plain = net.containers.create(name="offline")
    assert plain.network_policy is not None
    assert plain.network_policy.type == "disabled"
    out = run(net_server, plain.id, "import os, socket\nprint(os.environ.get('HTTPS_PROXY'))\ntry:\n"
              "    socket.create_connection(('127.0.0.1', 3128), timeout=10)\nexcept OSError as exc:\n"
              "    print('refused', exc.errno)\n")
    assert out.split() == ["None", "refused", "111"]
    net.containers.delete(plain.id)


def test_an_auto_container_takes_the_tools_network_policy(net_server: Server, upstream: ScriptedUpstream,
                                                         model: str) -> None:
    code = "import requests\nprint(requests.get('https://api.test/auto').json()['server'])"
    upstream.script(model, {"code": code}, {"text": "done"})
    with client(net_server) as sdk:
        answer = sdk.responses.create(model=model, input="call it", include=["code_interpreter_call.outputs"],
                                      tools=[{"type": "code_interpreter", "container": {
                                          "type": "auto", "network_policy": POLICY}}])  # type: ignore[list-item]
        call = answer.output[0]
        assert call.type == "code_interpreter_call"
        assert call.outputs[0].logs == "api\n"  # type: ignore[index, union-attr]
        shown = sdk.containers.retrieve(call.container_id)
        assert shown.network_policy.allowed_domains == POLICY["allowed_domains"]  # type: ignore[union-attr]
    bad = {"type": "allowlist", "allowed_domains": ["pypi.org"]}
    with raw(net_server) as http:
        refused = http.post("/v1/responses", json={"model": model, "input": "x", "tools": [
            {"type": "code_interpreter", "container": {"type": "auto", "network_policy": bad}}]})
    error = check_error(refused, 400, "not among the domains")
    assert error["param"] == "tools.0.container.network_policy.allowed_domains.0"


def test_after_a_restart_the_allowlist_comes_back_and_secrets_do_not(tmp_path: Path) -> None:
    settings = {"CELLBOX_EGRESS_PERMIT": "*.test"}
    server = Server(tmp_path, **settings).start()
    try:
        with client(server) as sdk:
            kept = sdk.containers.create(name="kept", network_policy={  # type: ignore[arg-type]
                "type": "allowlist", "allowed_domains": ["api.test"]})
            secret = sdk.containers.create(name="secret", network_policy=POLICY | {  # type: ignore[arg-type]
                "allowed_domains": ["api.test"]})
        server.stop()
        server.start()
        with client(server) as sdk:
            assert sdk.containers.retrieve(kept.id).status == "running"
            assert sdk.containers.retrieve(secret.id).status == "expired"
        out = run(server, kept.id, "import os\nprint(os.environ['HTTPS_PROXY'])")
        assert out == "http://127.0.0.1:3128\n"
    finally:
        server.stop()
