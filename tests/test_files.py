"""The one atomic writer: whole files or none, the previous version kept on failure, modes as open() gives."""

from __future__ import annotations

import os

import pytest

from distgan import files


def test_a_write_replaces_the_file_whole_with_the_umask_mode(tmp_path):
    target = tmp_path / "sub" / "config.yaml"
    files.write_atomic(target, "a: 1\n")
    old = os.umask(0o027)
    try:
        files.write_atomic(target, b"a: 2\n")
    finally:
        os.umask(old)
    assert target.read_text() == "a: 2\n"
    assert target.stat().st_mode & 0o777 == 0o640  # 0o666 less the umask, not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]  # no temporary left behind


def test_a_failed_write_keeps_the_previous_version_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    files.write_atomic(target, "old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
