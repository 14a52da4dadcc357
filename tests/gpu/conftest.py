"""The CUDA suite (``make test-gpu``): every test here needs a GPU and is skipped without one."""
import pytest
import torch

REASON = "no CUDA device visible to PyTorch: tests/gpu runs on a GPU machine (make test-gpu)"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    here = str(__file__).rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=REASON))
