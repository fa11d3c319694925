"""Who may reach xend over HTTP, and what they may do: the gate and the roles, probed the
way the issue's attacker did: as an unprivileged local user the test makes, with no
credentials, a viewer's token, a wrong one, or the admin's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.users import User, as_user, local_group, local_user
from tests.support.xend import XM, Xend, run_xm, sim_vm
from xend_actors import sxp

pytestmark = pytest.mark.integration

RO_SOCKET = "ro.sock"
@pytest.fixture(scope="module")
def outsider() -> Iterator[User]:
    """A local user with no rights on xend."""
    with local_user() as user:
        yield user


@pytest.fixture(scope="module")
def shared_xend_config() -> Iterator[str]:
    # The read-only socket outside the test's 0700 folder, in a folder xend makes.
    yield f"(xend-unix-ro-path {ro_socket()})\n"
    shutil.rmtree(ro_socket().parent, ignore_errors=True)


def probe(user: User, where: Path | str, method: str, url: str, *, token: str = "",
          **fields: str) -> str:
    """What ``user`` gets asking xend with curl, on its socket at ``where`` or at the
    ``host:port`` of its TCP port: ``STATUS BODY``, or ``refused: ...`` when the socket
    does not let the user in."""
    data = [arg for name, value in fields.items()
            for arg in ("--data-urlencode", f"{name}={value}")]
    reach = (["--unix-socket", str(where), f"http://xend{url}"] if isinstance(where, Path)
             else [f"http://{where}{url}"])
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    done = subprocess.run(
        ["curl", "-sS", "-X", method, "-H", "Accept: application/sxp", *auth, *data,
         "-w", "\n%{http_code}", *reach],
        capture_output=True, text=True, timeout=60, **as_user(user))
    if done.returncode == 7:  # curl: could not connect
        return f"refused: {done.stderr}"
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return f"{status} {body}"


def ro_socket() -> Path:
    return Path(f"/tmp/xend-ro-{os.getpid()}") / RO_SOCKET



# --- no credentials ------------------------------------------------------------------------------


def test_an_unprivileged_user_on_tcp_without_credentials_gets_401_and_nothing_runs(
        xend: Xend, outsider: User) -> None:
    # The probes: a guest given a disk that is a file of root's, and a save file
    # that xend (root) would write in /etc.
    secret = Path("/root") / f"xend-probe-{os.getpid()}"
    secret.write_text("root's own\n")
    secret.chmod(0o600)
    target = Path("/etc") / f"xend-probe-{os.getpid()}"
    xend.start_sim("victim")
    tcp = f"127.0.0.1:{xend.home.http_port}"
    try:
        vm = sim_vm("intruder", ["device", ["vbd", ["uname", f"file:{secret}"],
                                            ["dev", "sda1"], ["mode", "r"]]])
        answers = [probe(outsider, tcp, "GET", "/xend/domain/"),
                   probe(outsider, tcp, "POST", "/xend/domain/", op="create",
                         config=sxp.show(vm)),
                   probe(outsider, tcp, "POST", "/xend/domain/victim", op="save",
                         file=str(target))]
        for answer in answers:
            assert answer.startswith("401 (xend.err 'Authentication required"), answer
        assert "intruder" not in xend.names() and not target.exists()
        assert "victim" in xend.names()
    finally:
        secret.unlink()
        target.unlink(missing_ok=True)


def test_a_viewer_token_in_an_unprivileged_users_hands_runs_nothing(
        xend: Xend, outsider: User) -> None:
    xend.start_sim("victim")
    token = xend.home.new_token("handed", "viewer")
    tcp = f"127.0.0.1:{xend.home.http_port}"
    target = Path("/etc") / f"xend-probe-{os.getpid()}"
    try:
        looked = probe(outsider, tcp, "GET", "/xend/domain/victim", token=token)
        saved = probe(outsider, tcp, "POST", "/xend/domain/victim", token=token, op="save",
                      file=str(target))
        assert looked.startswith("200 (domain"), looked
        assert saved.startswith("403 (xend.err 'token handed is a viewer"), saved
        assert not target.exists() and "victim" in xend.names()
    finally:
        target.unlink(missing_ok=True)


def test_no_credentials_get_401_with_the_challenge(xend: Xend) -> None:
    with xend.home.http(token="") as http:
        reply = http.get("/xend/domain/")
    assert reply.status_code == 401, reply.text
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="xend"'
    assert sxp.parse(reply.text)[0] == "xend.err"


def test_a_browser_without_credentials_is_sent_to_the_login(xend: Xend) -> None:
    browser = {"Accept": "text/html", "User-Agent": "Mozilla/5.0"}
    with xend.home.http(token="") as http:
        page = http.get("/xend/domain/", params={"detail": "1"}, headers=browser)
        # A form posted after its session expired: not run, the browser logs in again.
        form = http.post("/xend/domain/", headers=browser, data={
            "op": "create", "config": sxp.show(sim_vm("late"))})
    assert page.status_code == 303
    assert page.headers["Location"] == "/xend/login?next=/xend/domain/%3Fdetail%3D1"
    assert form.status_code == 303
    assert form.headers["Location"] == "/xend/login?next=/xend/domain/"
    assert "late" not in xend.names()


def test_the_admin_socket_refuses_an_unprivileged_user(xend: Xend, outsider: User) -> None:
    answer = probe(outsider, xend.home.unix_path, "POST", "/xend/domain/",
                   op="create", config=sxp.show(sim_vm("intruder")))
    assert answer.startswith("refused:"), answer
    assert "intruder" not in xend.names()


def test_wrong_malformed_and_oversized_credentials_are_4xx(xend: Xend) -> None:
    cases = {"Bearer tests.not-the-secret": 401, "Bearer nobody.x": 401,
             "Basic cm9vdDpyb290": 400, "Bearer " + "a" * 5000: 400, "Bearer": 400}
    for header, status in cases.items():
        with xend.home.http(token="") as http:
            reply = http.get("/xend/domain/", headers={"Authorization": header})
        assert reply.status_code == status, (header, reply.text)
        assert sxp.parse(reply.text)[0] == "xend.err"
    # ...and xend serves the admin as before.
    with xend.home.http() as http:
        assert http.get("/xend/domain/").status_code == 200


def test_guessing_tokens_is_refused_a_while_but_others_are_served(
        fresh_xend: Callable[..., Xend]) -> None:
    xend = fresh_xend()
    good = xend.home.admin_token()
    with xend.home.http(token="") as http:
        statuses = [http.get("/xend/", headers={"Authorization": f"Bearer tests.guess{n}"})
                    .status_code for n in range(12)]
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
        # Even the right token, from the guessing client, until the window has passed.
        refused = http.get("/xend/", headers={"Authorization": f"Bearer {good}"})
        assert refused.status_code == 429 and "Too many failed attempts" in refused.text
    assert xend.names() == ["Domain-0"]  # the Unix socket is another client


# --- roles ---------------------------------------------------------------------------------------


def test_a_viewer_looks_but_changes_nothing(xend: Xend, tmp_path: Path) -> None:
    xend.start_sim("v1")
    token = xend.home.new_token("look", "viewer")
    target = tmp_path / "v1.save"
    with xend.home.http(token=token) as http:
        assert http.get("/xend/domain/").status_code == 200
        assert http.get("/xend/domain/v1").status_code == 200
        assert http.get("/xend/domain/v1", params={"op": "vbds"}).status_code == 200
        assert http.get("/xend/event/", params={"since": 0}).status_code == 200
        refused = [
            http.post("/xend/domain/v1", data={"op": "save", "file": str(target)}),
            http.post("/xend/domain/v1", data={"op": "destroy"}),
            http.post("/xend/domain/", data={"op": "create",
                                             "config": sxp.show(sim_vm("v2"))}),
            http.get("/xend/domain/v1", params={"op": "mem_target_set", "target": "16"}),
            http.get("/xend/token/"),
            http.post("/xend/token", data={"op": "create", "name": "mine"}),
        ]
    for reply in refused:
        assert reply.status_code == 403, reply.text
        assert "token look is a viewer" in sxp.parse(reply.text)[1]
    assert not target.exists()
    assert xend.names() == ["Domain-0", "v1"] and "p" not in xend.state("v1")
    assert sxp.child_value(xend.info("v1"), "memory") == "32"


def test_the_read_only_socket_lets_anyone_look_and_nobody_change(
        xend: Xend, outsider: User) -> None:
    path = ro_socket()
    looked = probe(outsider, path, "GET", "/xend/domain/")
    assert looked.startswith("200") and "Domain-0" in looked
    changed = probe(outsider, path, "POST", "/xend/domain/",
                    op="create", config=sxp.show(sim_vm("intruder")))
    assert changed.startswith("403") and f"uid {outsider.uid} is a viewer" in changed
    assert "intruder" not in xend.names()


def test_the_unix_group_makes_its_members_admins(fresh_xend: Callable[..., Xend]) -> None:
    folder = Path(f"/tmp/xend-group-{os.getpid()}")  # made by xend, outside the test's 0700 one
    with local_group() as group, local_user(group) as member, local_user() as other:
        xend = fresh_xend(f"(xend-unix-group {group})\n(xend-unix-path {folder}/xend.sock)\n")
        socket_path = folder / "xend.sock"
        assert oct(socket_path.stat().st_mode & 0o777) == "0o660"
        assert oct(folder.stat().st_mode & 0o777) == "0o710"
        try:
            made = probe(member, socket_path, "POST", "/xend/domain/",
                         op="create", config=sxp.show(sim_vm("m1")))
            assert made.startswith("201"), made
            refused = probe(other, socket_path, "GET", "/xend/domain/")
            assert refused.startswith("refused:"), refused
        finally:
            xend.home.stop()
            shutil.rmtree(folder, ignore_errors=True)


# --- tokens --------------------------------------------------------------------------------------


def test_xm_makes_lists_and_deletes_tokens(xend: Xend) -> None:
    assert XM
    unix = {"XEND_UNIX_PATH": str(xend.home.unix_path)}
    made = run_xm(None, "token-create", "ci", env=unix)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    assert secret.startswith("ci.") and len(secret) > 40
    stored = (xend.home.dbroot / "token" / "ci").read_text()
    assert secret.split(".", 1)[1] not in stored  # only its hash is kept
    assert oct((xend.home.dbroot / "token" / "ci").stat().st_mode & 0o777) == "0o600"
    over_tcp = {"XEND": f"127.0.0.1:{xend.home.http_port}", "XEND_TOKEN": secret}
    listed = run_xm(None, "token-list", env=over_tcp)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]
            if line.startswith("ci ")] == [["ci", "admin"]]
    by_switch = run_xm(None, "--server", f"127.0.0.1:{xend.home.http_port}", "--token", secret,
                       "list", env=unix)
    assert by_switch.returncode == 0 and "Domain-0" in by_switch.stdout
    assert run_xm(None, "token-create", "ci", env=unix).stderr == "Error: Token ci exists\n"
    assert run_xm(None, "token-delete", "ci", env=unix).returncode == 0
    gone = run_xm(None, "list", env=over_tcp)
    assert (gone.returncode, gone.stderr) == (1, "Error: Unknown or wrong API token\n")


def test_a_viewer_token_from_xm(xend: Xend) -> None:
    unix = {"XEND_UNIX_PATH": str(xend.home.unix_path)}
    secret = run_xm(None, "token-create", "--viewer", "eyes", env=unix).stdout.splitlines()[-1]
    tcp = {"XEND": f"127.0.0.1:{xend.home.http_port}", "XEND_TOKEN": secret}
    assert run_xm(None, "list", env=tcp).returncode == 0
    refused = run_xm(None, "create", "-F", "/dev/null", env=tcp)
    assert refused.returncode == 1
    paused = run_xm(None, "pause", "0", env=tcp)
    assert paused.stderr == "Error: token eyes is a viewer: it may not run pause\n"
    run_xm(None, "token-delete", "eyes", env=unix)


def test_bad_token_names_are_refused(xend: Xend) -> None:
    with xend.home.unix_http() as http:
        for name in ("", "a/b", "x" * 65, "../etc", "a.b"):
            reply = http.post("/xend/token", data={"op": "create", "name": name})
            assert reply.status_code == 400, (name, reply.text)
        assert http.post("/xend/token", data={"op": "create", "name": "r",
                                              "role": "root"}).status_code == 400
    assert not (xend.home.dbroot / "token" / "r").exists()


# --- audit ---------------------------------------------------------------------------------------


def test_every_op_is_audited_with_who_and_how_it_ended(xend: Xend) -> None:
    token = xend.home.new_token("auditee", "viewer")
    xend.start_sim("a1")
    with xend.home.http(token=token) as http:
        http.post("/xend/domain/a1", data={"op": "pause"})
    with xend.home.http() as http:
        http.post("/xend/domain/a1", data={"op": "pause"})
    lines = [line for line in xend.events.lines() if line.startswith("xend.audit ")]
    assert "xend.audit (audit (who 'uid 0') (op create) (path /xend/domain/) (status 201))" \
        in lines
    assert any(line.startswith("xend.audit (audit (who 'token auditee') (op pause) "
                               "(path /xend/domain/a1) (domain a1) (status 403)")
               for line in lines), lines
    assert "xend.audit (audit (who 'token tests') (op pause) (path /xend/domain/a1) " \
        "(domain a1) (status 200))" in lines
    log = xend.home.logfile.read_text()
    assert "token tests ran pause on /xend/domain/a1 on domain a1: 200" in log


# --- the original's behaviour, when asked for ---------------------------------------------------


def test_http_auth_no_is_the_original_with_a_warning(fresh_xend: Callable[..., Xend]) -> None:
    xend = fresh_xend("(xend-http-auth no)\n(console-tcp yes)\n")
    server = f"127.0.0.1:{xend.home.http_port}"
    config = xend.home.root / "o1.sxp"
    config.write_text(sxp.show(sim_vm("o1")))
    assert run_xm(server, "create", "-F", str(config)).returncode == 0
    assert run_xm(server, "pause", "o1").returncode == 0
    listed = run_xm(server, "list")
    assert "o1" in listed.stdout
    consoles = run_xm(server, "consoles")
    assert consoles.returncode == 0 and consoles.stdout.startswith("Dom Port")
    port = xend.console_port("o1")
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # (console-tcp yes): the raw console port is open, as in the original
    assert "(xend-http-auth no): HTTP clients over TCP are not asked who they are" \
        in xend.home.logfile.read_text()
    with httpx.Client(base_url=xend.home.url, headers={"Accept": "application/sxp"}) as http:
        assert http.get("/xend/domain/").status_code == 200
