"""What a new user sees on the first run: the tiny model's one-time build is announced, not silent."""

from __future__ import annotations

import logging

from ideogram4 import tiny


def test_tiny_build_says_what_it_is_doing_once(tmp_path, monkeypatch, caplog):
    built = []

    def fake_build(folder, layout, seed):  # the real build takes ~15 s; only the messages are tested
        built.append(folder)
        (folder / "tokenizer").mkdir()

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", fake_build)
    with caplog.at_level(logging.INFO, logger="ideogram4.tiny"):
        first = tiny.ensure_tiny_checkpoint(tmp_path)
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0].startswith("Building the tiny random model (first use only") and first in messages[0]
        assert messages[1].startswith("Built the tiny model in ") and len(messages) == 2
        caplog.clear()
        assert tiny.ensure_tiny_checkpoint(tmp_path) == first and not caplog.records and len(built) == 1
