"""Reading xend-config.sxp (xend-facts.md §3) into an XendConfig."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xend_actors.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Hypervisor,
    XendConfig,
    config_path,
    load_config,
    parse_config,
    script_words,
)
from xend_actors.errors import XendError

EXAMPLES = Path(__file__).parents[1] / "data" / "reference-examples"
SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "xend-config.sxp"


def test_defaults() -> None:
    config = parse_config("")
    assert config == XendConfig()
    assert (config.http_port, config.http_address) == (8000, "")
    assert (config.event_port, config.console_port_base, config.relocation_port) == (
        8001, 9600, 8002
    )
    assert config.unix_server is False
    assert config.unix_path == Path("/var/run/xend/xend.sock")
    assert config.vif_antispoof is True
    assert dict(config.block_scripts) == {}
    assert config.hypervisor is Hypervisor.SIM
    assert config.dbroot == Path("/var/lib/xen/xend-db")
    assert config.pid_file == Path("/var/run/xend/xend.pid")
    assert config.debug_log == Path("/var/log/xend-debug.log")
    assert config.trace_file == Path("/var/log/xend.trace")
    assert config.warnings == ()


# Inside quotes SXP writes a backslash as \\ (see the regexes).
EVERY_OPTION = r"""
(xend-port 18000)
(xend-address 127.0.0.2)
(xend-unix-server on)
(xend-unix-path /tmp/x/http.sock)
(xend-hosts-allow '^localhost$ ^10\\.0\\.')
(xend-event-port 18001)
(xend-max-connections 100)
(xend-max-client-connections 10)
(xend-max-waiting 5)
(xend-read-timeout 2.5)
(xend-relocation-server TRUE)
(xend-relocation-port 18002)
(xend-relocation-address 10.0.0.1)
(xend-relocation-hosts-allow '^peer')
(console-port-base 19600)
(console-address 127.0.0.3)
(network-script network-route)
(vif-bridge br1)
(vif-script vif-route)
(vif-antispoof 0)
(block-file block-file)
(block-nbd /usr/local/bin/block-nbd)
(xend-scripts-dir /opt/xen/scripts)
(dbroot /tmp/x/db)
(logfile /tmp/x/log/xend.log)
(loglevel info)
(hypervisor qemu)
(xend-run-dir /tmp/x/run)
(minimum-restart-time 2.5)
"""


def test_every_option_is_read() -> None:
    config = parse_config(EVERY_OPTION, Path("/tmp/x/xend-config.sxp"))
    assert config == XendConfig(
        http_port=18000,
        http_address="127.0.0.2",
        unix_server=True,
        unix_path=Path("/tmp/x/http.sock"),
        hosts_allow=(re.compile("^localhost$"), re.compile(r"^10\.0\.")),
        event_port=18001,
        max_connections=100,
        max_client_connections=10,
        max_waiting=5,
        read_timeout=2.5,
        relocation_server=True,
        relocation_port=18002,
        relocation_address="10.0.0.1",
        relocation_hosts_allow=(re.compile("^peer"),),
        console_port_base=19600,
        console_address="127.0.0.3",
        network_script="network-route",
        vif_bridge="br1",
        vif_script="vif-route",
        vif_antispoof=False,
        block_scripts={"file": "block-file", "nbd": "/usr/local/bin/block-nbd"},
        scripts_dir=Path("/opt/xen/scripts"),
        dbroot=Path("/tmp/x/db"),
        logfile=Path("/tmp/x/log/xend.log"),
        loglevel="INFO",
        hypervisor=Hypervisor.QEMU,
        run_dir=Path("/tmp/x/run"),
        minimum_restart_time=2.5,
        source=Path("/tmp/x/xend-config.sxp"),
    )
    assert config.pid_file == Path("/tmp/x/run/xend.pid")
    assert config.debug_log == Path("/tmp/x/log/xend-debug.log")


def test_unix_path_defaults_into_the_run_dir() -> None:
    assert parse_config("(xend-run-dir /tmp/r)").unix_path == Path("/tmp/r/xend.sock")


def test_the_config_cannot_be_changed() -> None:
    config = parse_config("(block-file block-file)")
    assert XendConfig(block_scripts={"a": "b"}).block_scripts == {"a": "b"}
    with pytest.raises(AttributeError):
        config.http_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.block_scripts["file"] = "other"  # type: ignore[index]


def test_first_occurrence_wins_and_the_repeat_is_reported() -> None:
    config = parse_config("(xend-port 8000)\n(xend-port 9000)\n", Path("c.sxp"))
    assert config.http_port == 8000
    assert config.warnings == (
        "c.sxp:2:1: xend-port given again; the first, at c.sxp:1:1, is used",
    )


def test_reference_2_0_0_file() -> None:
    config = load_config(EXAMPLES / "xend-config-2.0.0.sxp")
    assert config.warnings == ()
    assert (config.http_port, config.http_address) == (8000, "")
    assert config.vif_antispoof is False
    assert dict(config.block_scripts) == {"file": "block-file", "enbd": "block-enbd"}
    assert (config.network_script, config.vif_bridge, config.vif_script) == (
        "network", "xen-br0", "vif-bridge"
    )
    assert config.source == EXAMPLES / "xend-config-2.0.0.sxp"


def test_reference_2_0_6_file() -> None:
    config = load_config(EXAMPLES / "xend-config-2.0.6.sxp")
    assert config.warnings == ()
    assert (config.http_address, config.console_address) == ("localhost", "localhost")
    assert (config.event_port, config.console_port_base) == (8001, 9600)
    assert config.vif_antispoof is False
    assert dict(config.block_scripts) == {"file": "block-file", "enbd": "block-enbd"}
    assert config.network_script == "network"  # the commented-out network-route is ignored


def test_shipped_file() -> None:
    config = load_config(SHIPPED)
    assert config.warnings == ()
    assert (config.http_address, config.console_address) == ("localhost", "localhost")
    assert config.unix_server is True
    assert config.vif_antispoof is True
    assert config.hypervisor is Hypervisor.SIM
    assert config.hosts_allow == ()


def test_shipped_file_mentions_every_option() -> None:
    text = SHIPPED.read_text()
    # EVERY_OPTION names every option there is.
    for option in re.findall(r"^\((\S+)", EVERY_OPTION, re.MULTILINE):
        assert f"({option} " in text or option == "block-nbd", option


def test_unknown_option_is_a_warning_naming_it() -> None:
    config = parse_config("# hi\n(xend-port 8000)\n  (xend-colour blue)\n", Path("/etc/x.sxp"))
    assert config.http_port == 8000
    assert config.warnings == ("/etc/x.sxp:3:3: unknown option xend-colour ignored",)


def test_missing_file_means_defaults_with_a_warning(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.sxp")
    assert config.http_port == 8000
    assert config.source is None
    assert len(config.warnings) == 1 and "absent.sxp" in config.warnings[0]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a folder


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(xend-port 8000)\n\n  (vif-bridge", "c.sxp:3:14: unexpected EOF"),
        ("(xend-port 8000))", "c.sxp:1:17: syntax error: )"),
        ("(xend-port 8000 8001)", "c.sxp:1:1: expected (option value), got (xend-port 8000 8001)"),
        ("(xend-port)", "c.sxp:1:1: expected (option value), got (xend-port)"),
        ("xend-port", "c.sxp:1:1: expected (option value), got xend-port"),
        ("\n (xend-port (8000))", "c.sxp:2:2: expected (option value), got (xend-port (8000))"),
    ],
)
def test_malformed_file_is_a_config_error_with_position(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("c.sxp"))
    assert str(caught.value) == message
    assert isinstance(caught.value, XendError)


def test_malformed_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "xend-config.sxp"
    path.write_bytes(b"(xend-address \xff)")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:1:15: invalid UTF-8"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("(vif-antispoof maybe)", "vif-antispoof"),
        ("(xend-unix-server '')", "xend-unix-server"),
        ("(xend-port 65536)", "xend-port"),
        ("(xend-event-port -1)", "xend-event-port"),
        ("(console-port-base 96OO)", "console-port-base"),
        ("(xend-relocation-port 8_002)", "xend-relocation-port"),
        ("(loglevel LOUD)", "loglevel"),
        ("(xend-hosts-allow '^ok [unclosed')", "xend-hosts-allow"),
        ("(xend-relocation-hosts-allow '(')", "xend-relocation-hosts-allow"),
        ("(hypervisor xen)", "hypervisor"),
        ("(dbroot var/db)", "dbroot"),
        ("(minimum-restart-time soon)", "minimum-restart-time"),
        ("(minimum-restart-time -1)", "minimum-restart-time"),
        ("(vif-bridge '')", "vif-bridge"),
        ("(block-file '')", "block-file"),
        ("(network-script 'network netdev=\"eth0')", "network-script"),
        ("(vif-script 'vif-bridge \\\\')", "vif-script"),
        ("(block-nbd \"block-nbd 'x\")", "block-nbd"),
        ("(network-script '  ')", "network-script"),
    ],
)
def test_bad_value_is_a_config_error_naming_option_and_place(text: str, option: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"# line 1\n{text}", Path("/etc/xen/xend-config.sxp"))
    assert str(caught.value).startswith(f"/etc/xen/xend-config.sxp:2:1: {option}: ")


def test_script_options_take_arguments_split_as_a_shell_would() -> None:
    config = parse_config("(network-script 'network netdev=eth0')\n"
                          "(vif-script \"vif-bridge 'note=a b'\")\n"
                          "(block-nbd '/opt/block-nbd --port 10809')\n")
    assert script_words(config.network_script) == ["network", "netdev=eth0"]
    assert script_words(config.vif_script) == ["vif-bridge", "note=a b"]
    assert script_words(config.block_scripts["nbd"]) == ["/opt/block-nbd", "--port", "10809"]


def test_an_unbalanced_quote_says_which_option_and_what_is_wrong() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("(network-script 'network netdev=\"eth0')", Path("/etc/x.sxp"))
    assert str(caught.value) == ("/etc/x.sxp:1:1: network-script: cannot split "
                                 "'network netdev=\"eth0' as a shell would: "
                                 "no closing quotation")


@pytest.mark.parametrize(
    ("word", "value"),
    [("yes", True), ("1", True), ("On", True), ("TRUE", True),
     ("no", False), ("0", False), ("OFF", False), ("false", False)],
)
def test_boolean_words(word: str, value: bool) -> None:
    assert parse_config(f"(xend-unix-server {word})").unix_server is value


def test_ports_at_the_limits() -> None:
    assert parse_config("(xend-port 0)").http_port == 0
    assert parse_config("(xend-event-port 65535)").event_port == 65535


def test_config_path_prefers_explicit_then_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XEND_CONFIG", raising=False)
    assert config_path() == DEFAULT_CONFIG_PATH == Path("/etc/xen/xend-config.sxp")
    monkeypatch.setenv("XEND_CONFIG", str(tmp_path / "env.sxp"))
    assert config_path() == tmp_path / "env.sxp"
    assert config_path(tmp_path / "explicit.sxp") == tmp_path / "explicit.sxp"


def test_load_config_reads_the_file_named_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "env.sxp"
    path.write_text("(xend-port 8123)\n")
    monkeypatch.setenv("XEND_CONFIG", str(path))
    config = load_config()
    assert (config.http_port, config.source) == (8123, path)


def test_script_path_joins_relative_names_to_the_scripts_dir() -> None:
    config = parse_config("(xend-scripts-dir /opt/scripts)")
    assert config.script_path("vif-bridge") == Path("/opt/scripts/vif-bridge")
    assert config.script_path("/usr/bin/my-vif") == Path("/usr/bin/my-vif")


def test_a_read_timeout_below_a_second_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"xend-read-timeout: expected a number of seconds >= 1"):
        parse_config("(xend-read-timeout 0)")
    assert parse_config("(xend-read-timeout 2.5)").read_timeout == 2.5
