"""The configuration store: atomic records, corrupt ones set aside, reboot detection."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from xend_actors import store as store_module
from xend_actors.store import RecordDir, Store, atomic_write, detect_host_reboot, host_boot_id
from xend_actors.sxp import ParseError, parse_all

VM = [
    "vm",
    ["name", 'it\'s a "test"'],
    ["memory", "64"],
    ["image", ["linux", ["kernel", "/boot/vmlinuz"], ["root", "/dev/hda1 ro"], ["args", "a\nb"]]],
    ["device", ["vbd", ["uname", "phy:hda1"], ["dev", "hda1"], ["mode", "r"]]],
    ["empty", []],
]


@pytest.fixture
def records(tmp_path: Path) -> RecordDir:
    return RecordDir(tmp_path / "domain")


def test_a_record_reads_back_as_written(records: RecordDir) -> None:
    records.write("7", VM)
    assert records.read("7") == VM
    assert RecordDir(records.path).load_all() == {"7": VM}


def test_a_record_starts_with_its_path_and_time(records: RecordDir) -> None:
    records.write("7", VM)
    first = (records.path / "7").read_text().splitlines()[0]
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"# {re.escape(str(records.path / '7'))} {stamp}", first)


def test_records_are_private_to_xend(records: RecordDir) -> None:
    records.write("7", VM)
    assert (records.path / "7").stat().st_mode & 0o777 == 0o600


def test_a_rewrite_replaces_the_record(records: RecordDir) -> None:
    records.write("7", VM)
    records.write("7", ["vm", ["name", "other"]])
    assert records.read("7") == ["vm", ["name", "other"]]


def test_a_failed_write_keeps_the_old_record_and_leaves_no_temp_file(
    records: RecordDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    records.write("7", VM)

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        records.write("7", ["vm", ["name", "new"]])
    monkeypatch.undo()
    assert os.listdir(records.path) == ["7"]
    assert records.read("7") == VM


def test_a_staged_record_is_read_only_once_committed(records: RecordDir) -> None:
    records.write("7", VM)
    staged = records.stage("7", ["vm", ["name", "new"]])
    assert records.read("7") == VM  # readers, and a xend started now, see the old one
    assert RecordDir(records.path).load_all() == {"7": VM}  # which removed the temp file
    staged = records.stage("7", ["vm", ["name", "new"]])
    staged.commit()
    assert records.read("7") == ["vm", ["name", "new"]]
    assert os.listdir(records.path) == ["7"]


def test_a_discarded_record_leaves_the_old_one_and_no_temp_file(records: RecordDir) -> None:
    records.write("7", VM)
    records.stage("7", ["vm", ["name", "new"]]).discard()
    records.stage("8", ["vm", ["name", "other"]]).discard()
    assert os.listdir(records.path) == ["7"]
    assert records.read("7") == VM


def test_atomic_write_creates_the_folder_and_sets_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "file"
    atomic_write(path, b"data", mode=0o644)
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.parent.stat().st_mode & 0o077 == 0


def test_a_record_larger_than_a_request_may_be_still_reads(records: RecordDir) -> None:
    big = ["vm", ["blob", "x" * (2 << 20)]]
    records.write("7", big)
    assert records.read("7") == big


def test_read_of_a_missing_record_is_none(records: RecordDir) -> None:
    assert records.read("7") is None


def test_corrupt_records_are_set_aside_and_the_rest_load(
    records: RecordDir, caplog: pytest.LogCaptureFixture
) -> None:
    records.write("1", VM)
    records.write("2", VM)
    records.write("3", ["vm", ["name", "three"]])
    text = (records.path / "2").read_text()
    (records.path / "2").write_text(text[: len(text) // 2])
    (records.path / "3").write_text(")))( garbage")
    (records.path / "4").write_text("")
    (records.path / "5").write_bytes(b"(vm (name \xff\xfe))")

    with caplog.at_level(logging.WARNING):
        assert records.load_all() == {"1": VM}

    assert records.keys() == ["1"]
    aside = sorted(path.name.split(".")[0] for path in (records.path / "corrupt").iterdir())
    assert aside == ["2", "3", "4", "5"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    with pytest.raises(ParseError) as garbage:
        parse_all(")))( garbage")
    assert any(
        f"{records.path / 'corrupt' / '3.'}" in w and str(garbage.value) in w for w in warnings
    )


def test_a_corrupt_record_read_alone_is_set_aside(records: RecordDir) -> None:
    (records.path / "5").write_text("# just a comment\n")
    assert records.read("5") is None
    assert records.keys() == []
    assert [p.name.split(".")[0] for p in (records.path / "corrupt").iterdir()] == ["5"]


def test_a_stale_temp_file_is_ignored_and_removed(records: RecordDir) -> None:
    records.write("1", VM)
    (records.path / f"{store_module.TMP_PREFIX}1.abc").write_text("(vm (name half")
    assert records.keys() == ["1"]
    assert records.load_all() == {"1": VM}
    assert os.listdir(records.path) == ["1"]


@pytest.mark.parametrize("key", ["../x", "a/b", "", ".hidden", "..", "x" * 129, "corrupt"])
def test_bad_keys_are_refused(records: RecordDir, key: str) -> None:
    with pytest.raises(ValueError):
        records.write(key, VM)
    with pytest.raises(ValueError):
        records.read(key)
    with pytest.raises(ValueError):
        records.delete(key)
    assert not (records.path.parent / "x").exists()


def test_delete_removes_a_record_and_an_absent_one_is_fine(records: RecordDir) -> None:
    records.write("1", VM)
    records.delete("1")
    records.delete("1")
    assert records.keys() == []
    assert records.read("1") is None


def test_keys_are_sorted(records: RecordDir) -> None:
    for key in ["b", "a_1", "10", "2"]:
        records.write(key, VM)
    assert records.keys() == ["10", "2", "a_1", "b"]


def test_store_has_its_three_private_folders(tmp_path: Path) -> None:
    store = Store(tmp_path / "xend-db")
    store.vnet.write("1", ["vnet", ["id", "1"]])
    for folder in ("domain", "migrate", "vnet"):
        assert (tmp_path / "xend-db" / folder).is_dir()
    assert (tmp_path / "xend-db" / "vnet" / "1").exists()
    assert (tmp_path / "xend-db").stat().st_mode & 0o077 == 0


# Reboot detection


@pytest.fixture
def host(tmp_path: Path) -> tuple[Store, Path, Path]:
    """A store with one record per folder, a run dir with nested state, a boot id file."""
    store = Store(tmp_path / "db")
    store.domain.write("3", VM)
    store.vnet.write("1", ["vnet", ["id", "1"]])
    store.migrate.write("0", ["migrate", ["domain", "3"]])
    run = tmp_path / "run"
    (run / "qemu" / "3").mkdir(parents=True)
    (run / "qemu" / "3" / "pid").write_text("1234")
    (run / "console-3.sock").write_text("")
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-one\n")
    return store, run, boot_id


def test_first_start_records_the_boot_and_keeps_everything(
    host: tuple[Store, Path, Path],
) -> None:
    store, run, boot_id = host
    assert detect_host_reboot(store, run, boot_id) is False
    assert (store.dbroot / "lastboot").read_text().strip() == "boot-one"
    assert sorted(os.listdir(run)) == ["console-3.sock", "qemu"]
    assert store.migrate.keys() == ["0"]


def test_the_same_boot_keeps_the_runtime_state(host: tuple[Store, Path, Path]) -> None:
    store, run, boot_id = host
    detect_host_reboot(store, run, boot_id)
    assert detect_host_reboot(store, run, boot_id) is False
    assert (run / "qemu" / "3" / "pid").read_text() == "1234"
    assert store.migrate.keys() == ["0"]


def test_a_reboot_drops_runtime_state_and_keeps_configuration(
    host: tuple[Store, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, run, boot_id = host
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (run / "link").symlink_to(outside)
    detect_host_reboot(store, run, boot_id)
    boot_id.write_text("boot-two\n")

    with caplog.at_level(logging.INFO):
        assert detect_host_reboot(store, run, boot_id) is True

    assert run.is_dir() and os.listdir(run) == []
    assert (outside / "keep").read_text() == "keep"
    assert store.migrate.keys() == []
    assert store.domain.load_all() == {"3": VM}
    assert store.vnet.keys() == ["1"]
    assert (store.dbroot / "lastboot").read_text().strip() == "boot-two"
    assert any(r.levelno == logging.INFO and "reboot" in r.getMessage() for r in caplog.records)
    assert detect_host_reboot(store, run, boot_id) is False


def test_a_store_inside_the_run_dir_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "run" / "db")
    with pytest.raises(ValueError):
        detect_host_reboot(store, tmp_path / "run", tmp_path / "boot_id")
    assert (tmp_path / "run" / "db").is_dir()


def test_boot_id_comes_from_the_kernel_or_else_the_boot_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("c0ffee\n")
    assert host_boot_id(boot_id) == "c0ffee"

    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n")
    monkeypatch.setattr(store_module, "PROC_STAT", stat)
    assert host_boot_id(tmp_path / "missing") == "btime 1700000000"
