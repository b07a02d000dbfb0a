"""numl.utils.files.replaced_when_complete: the complete file or none, and an earlier file survives a failed
rewrite."""

from __future__ import annotations

import pytest

from numl.utils.files import replaced_when_complete


def test_a_complete_write_lands_under_the_name_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "events.h5"
    with replaced_when_complete(target) as partial:
        assert partial == tmp_path / "events.h5.part"
        partial.write_text("complete")
        assert not target.exists()  # nothing under the final name while writing
    assert target.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.h5"]


def test_a_failed_rewrite_keeps_the_earlier_file_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "outputs.npz"
    target.write_text("earlier run")
    with pytest.raises(KeyboardInterrupt), replaced_when_complete(target, ".part.npz") as partial:
        partial.write_text("half")
        raise KeyboardInterrupt  # a Ctrl-C mid-write, not only an Exception
    assert target.read_text() == "earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs.npz"]
