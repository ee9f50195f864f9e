"""Device strings, read in one place: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (torch's spelling), or anything
else a model says it runs on (``"mps"``, ``"xpu:0"``).

:func:`parse` splits one into its kind and index (``None``: the kind's current device); :func:`is_cuda`
says whether it names an NVIDIA GPU; :func:`cuda_index` resolves the index torch means by it. Nothing
here imports torch: a caller passes ``torch.cuda`` where an index must be resolved.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from motune.errors import SpecError


class Device(NamedTuple):
    kind: str  # "cpu", "cuda", or another backend's name
    index: int | None  # None: the kind's current device (and always for "cpu")

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse(device: Any) -> Device:
    """``device`` (a string or a ``torch.device``) as its kind and index; a malformed one is a
    :class:`~motune.errors.SpecError`."""
    text = str(device).strip().lower()
    kind, sep, index = text.partition(":")
    if not kind or (sep and not index.isdigit()):
        raise SpecError(f"a device is 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {device!r}")
    return Device(kind, int(index) if sep else None)


def is_cuda(device: Any) -> bool:
    """Whether ``device`` names an NVIDIA GPU (``"cuda"`` or ``"cuda:N"``)."""
    return device is not None and parse(device).kind == "cuda"


def cuda_index(device: Any, cuda: Any) -> int:
    """The GPU index torch means by ``device`` (``"cuda"``: ``cuda.current_device()``)."""
    index = parse(device).index
    return cuda.current_device() if index is None else index


def same(a: Any, b: Any) -> bool:
    """Whether two device strings name the same device (``"cuda"`` is ``"cuda:0"`` where 0 is current)."""
    first, second = parse(a), parse(b)
    if first.kind != second.kind:
        return False
    return first.index == second.index or {first.index, second.index} == {None, 0}


__all__ = ["Device", "cuda_index", "is_cuda", "parse", "same"]
