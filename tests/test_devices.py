"""`device: cuda` without CUDA is an error naming the setting; `device: auto` says when it falls back to the CPU."""
import logging

import pytest
import torch

from common.devices import DeviceError, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@no_cuda
def test_cuda_asked_for_without_cuda_is_an_error_naming_the_setting():
    with pytest.raises(DeviceError, match=r"^encoders\.device: cuda asked for, but torch sees no CUDA device.*"
                                          r"set encoders\.device: auto or cpu$"):
        resolve_device("cuda", "encoders.device")


@no_cuda
def test_auto_falling_back_to_the_cpu_says_so_once(caplog):
    with caplog.at_level(logging.INFO, logger="common.devices"):
        assert resolve_device("auto", "test.device_a") == torch.device("cpu")
        assert resolve_device("auto", "test.device_a") == torch.device("cpu")
    lines = [r.getMessage() for r in caplog.records if "test.device_a" in r.getMessage()]
    assert lines == ["test.device_a: auto -> cpu (torch sees no CUDA device); set test.device_a: cuda to require "
                     "a GPU"]


def test_cpu_is_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
