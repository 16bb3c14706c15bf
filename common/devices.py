"""Which torch device a setting names (`auto`: the CUDA GPU when there is one)."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)
_told: set[str] = set()  # settings whose fall-back to the CPU was logged (once a process)


class DeviceError(ValueError):
    """A setting names a device this machine does not have."""


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """The device of a setting (`setting`: its name, e.g. encoders.device, for the messages).

    `cuda` without a CUDA device is an error rather than a silent hours-long CPU run; `auto` without one
    runs on the CPU and says so in one log line.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if setting not in _told:
            _told.add(setting)
            log.info("%s: auto -> cpu (torch sees no CUDA device); set %s: cuda to require a GPU", setting, setting)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{setting}: {name} asked for, but torch sees no CUDA device on this machine "
                          f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                          f"set {setting}: auto or cpu")
    return device
