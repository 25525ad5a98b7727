"""The one source resolver: every loader asks `ideogram4.sources.parse_source`, so they agree."""

from __future__ import annotations

import pytest

from ideogram4.sources import HUB_FILE, HUB_REPO, LOCAL, parse_source


@pytest.mark.parametrize(
    "text, kind, repo, filename",
    [
        ("ideogram-ai/ideogram-4-fp8", HUB_REPO, "ideogram-ai/ideogram-4-fp8", None),
        ("owner/repo/", HUB_REPO, "owner/repo", None),
        ("owner/repo/sub/style.safetensors", HUB_FILE, "owner/repo", "sub/style.safetensors"),
        ("loras/style.safetensors", LOCAL, None, None),  # a repo name never ends in a weights suffix
        ("style.safetensors", LOCAL, None, None),
        ("./owner/repo", LOCAL, None, None),
        ("/abs/owner/repo/x.safetensors", LOCAL, None, None),
        ("~/weights", LOCAL, None, None),
        ("owner//repo", LOCAL, None, None),  # not a valid hub id: a (missing) path
    ],
)
def test_text_alone_decides_when_nothing_is_on_disk(tmp_path, text, kind, repo, filename):
    where = parse_source(text, base=str(tmp_path))
    assert (where.kind, where.repo_id, where.filename) == (kind, repo, filename)
    assert (where.path is not None) == (kind == LOCAL)


def test_what_exists_on_disk_is_local_and_relative_to_base(tmp_path):
    (tmp_path / "owner" / "repo").mkdir(parents=True)
    where = parse_source("owner/repo", base=str(tmp_path))
    assert where.kind == LOCAL and where.path == tmp_path / "owner" / "repo" and where.exists
    assert parse_source("owner/repo", base=str(tmp_path / "elsewhere")).kind == HUB_REPO


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_source("~/w.safetensors").path == tmp_path / "w.safetensors"


def test_every_loader_takes_the_decision_from_the_one_resolver():
    """No loader keeps a rule of its own: each module reads `parse_source` from ideogram4.sources."""
    import ideogram4.captions.upsample as upsample
    import ideogram4.checkpoints.sources as weights
    import ideogram4.experiment.config.checks as runner_checks
    import ideogram4.experiment.config.plan as runner_plan
    import ideogram4.lora.files as lora_files
    import ideogram4.metrics.clip_score as clip
    import ideogram4.sources as one_home

    for module in (upsample, weights, runner_checks, runner_plan, lora_files, clip):
        assert module.parse_source is one_home.parse_source, module.__name__
