"""The shared shell of every command: what it keeps quiet, and what it does not."""

from __future__ import annotations

import logging

from lightning.pytorch import Trainer

from app.shell import LIGHTNING_RANK_ZERO_LOGGER, quiet_libraries


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LIGHTNING_RANK_ZERO_LOGGER]


def test_lightnings_advert_is_dropped_inside_the_commands_and_its_reports_are_kept(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger=LIGHTNING_RANK_ZERO_LOGGER)
    Trainer(default_root_dir=tmp_path, accelerator="cpu", enable_progress_bar=False, logger=False)
    outside = _messages(caplog)
    assert any(m.startswith("💡 Tip") for m in outside)  # the real Lightning still prints it (else drop the filter)
    caplog.clear()
    with quiet_libraries():
        Trainer(default_root_dir=tmp_path, accelerator="cpu", enable_progress_bar=False, logger=False)
    inside = _messages(caplog)
    assert not any(m.startswith("💡 Tip") for m in inside)
    assert any("GPU available" in m for m in inside)  # what describes the run stays
    assert not logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER).filters  # removed after the block
