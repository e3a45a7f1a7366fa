"""The atomic-write helpers: a failure leaves the old file or folder, never a torn or temporary one."""

import json

import pytest

from quantum_adapters.files import atomic_write, atomic_write_json, read_jsonl, staged_dir, staged_file


def test_atomic_write_replaces_whole_and_sets_mode(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write_json(target, {"x": 1}, sort_keys=True)
    atomic_write(tmp_path / "b.bin", b"\x00\x01", mode=0o444)
    assert json.loads(target.read_text()) == {"x": 1}
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_staged_file_renames_a_file_another_writer_made_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "lib.so"
    with staged_file(target, mode=0o644) as tmp:
        assert tmp.parent == tmp_path and not target.exists()
        tmp.unlink()  # a compiler replaces its output file rather than writing into it
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), staged_file(target) as tmp:
        tmp.write_bytes(b"torn")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["lib.so"]


def test_staged_dir_renames_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "art"
    with staged_dir(target) as tmp:
        (tmp / "f").write_text("1")
        assert not target.exists()
    assert (target / "f").read_text() == "1"
    with pytest.raises(RuntimeError), staged_dir(target, replace=True) as tmp:
        (tmp / "f").write_text("2")
        raise RuntimeError("boom")
    assert (target / "f").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]
    with staged_dir(target, replace=True) as tmp:
        (tmp / "g").write_text("3")
    assert [p.name for p in target.iterdir()] == ["g"]


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo\n')
    with pytest.raises(ValueError, match=r"m.jsonl:4: not a JSON record"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
