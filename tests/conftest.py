"""Shared fixtures."""

import pytest
import torch

from bbcodec import zoo


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """One thread, a fixed seed, a private model zoo and tmp_path as the working folder."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))  # never touch the real zoo
    monkeypatch.chdir(tmp_path)
