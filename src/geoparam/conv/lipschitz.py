"""1-Lipschitz activations that keep gradient norms: MaxMin and GroupSort."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GroupSort", "MaxMin"]


class GroupSort(nn.Module):
    r"""Sort the channels within consecutive groups of ``group_size``: 1-Lipschitz, norm-preserving.

    A permutation of the entries that depends on the input: ``‖f(x)‖ = ‖x‖`` and
    ``‖f(x) − f(y)‖ ≤ ‖x − y‖``, and its Jacobian is a permutation almost everywhere, so
    gradients keep their norm where a ReLU would zero half of them (Anil, Lucas, Grosse,
    "Sorting out Lipschitz function approximation", ICML 2019). Channels are ``dim`` (``1``, as in
    ``(batch, channels, ...)``); their number must be a multiple of ``group_size``.

    Args:
        group_size: entries per group (``2`` is :class:`MaxMin`).
        dim: the channel dimension. Default: ``1``.

    Raises:
        ValueError: ``group_size < 1``; at call time, channels not a multiple of it.

    Example:
        >>> GroupSort(2)(torch.tensor([[3.0, 1.0, -1.0, 2.0]]))
        tensor([[ 1.,  3., -1.,  2.]])
    """

    def __init__(self, group_size: int, dim: int = 1) -> None:
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"GroupSort: group_size must be a positive int, got {group_size!r}.")
        self.group_size = group_size
        self.dim = dim

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, dim={self.dim}"

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim % x.ndim
        channels = x.size(dim)
        if channels % self.group_size:
            raise ValueError(
                f"{type(self).__name__}: {channels} channels (dim {self.dim} of shape "
                f"{tuple(x.shape)}) are not a multiple of the group size {self.group_size}."
            )
        groups = x.unflatten(dim, (channels // self.group_size, self.group_size))
        return groups.sort(dim=dim + 1).values.flatten(dim, dim + 1)


class MaxMin(GroupSort):
    r"""The smaller and the larger of each pair of channels: :class:`GroupSort` with groups of 2.

    Example:
        >>> MaxMin()(torch.tensor([[3.0, 1.0, -1.0, 2.0]]))
        tensor([[ 1.,  3., -1.,  2.]])
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__(2, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
