"""Where the batched solvers run: the ``device`` parameter of fit, match_probability and sweep."""
from __future__ import annotations

import torch

from .._checks import ParameterError


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`: ``"cpu"``, or ``"cuda"`` (``"cuda:N"``) where torch sees a GPU.

    Raises
    ------
    ParameterError
        Any other device, or ``"cuda"`` asked of a torch that has no usable GPU.
    """
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"The 'device' parameter must be 'cpu' or 'cuda'. Got {device!r} instead.") from None
    if out.type not in ("cpu", "cuda"):
        raise ParameterError(f"The 'device' parameter must be 'cpu' or 'cuda'. Got {device!r} instead.")
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"The 'device' parameter is {device!r}, but torch {torch.__version__} sees no CUDA GPU "
                             f"here (torch.cuda.is_available() is False). Use device='cpu'.")
    return out
