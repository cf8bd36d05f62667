"""Kernels: differentiable functions on tensors, with no knowledge of modules."""

from .cayley import cayley, rotated_cayley, rotated_cayley_lower
from .conv import ConvOperator, operator_power_iteration_
from .conv_spectrum import conv_singular_values, project_conv_operator_norm
from .expm import expm_skew
from .householder import householder_product, householder_square, rotated_householder
from .lyapunov import solve_lyapunov
from .orthogonalize import householder_reflectors, is_orthogonal, polar, qr_positive
from .power import power_iteration_
from .stiefel import stiefel_cayley, stiefel_expm

__all__ = [
    "ConvOperator",
    "cayley",
    "conv_singular_values",
    "expm_skew",
    "householder_product",
    "householder_reflectors",
    "householder_square",
    "is_orthogonal",
    "operator_power_iteration_",
    "polar",
    "power_iteration_",
    "project_conv_operator_norm",
    "qr_positive",
    "rotated_cayley",
    "rotated_cayley_lower",
    "rotated_householder",
    "solve_lyapunov",
    "stiefel_cayley",
    "stiefel_expm",
]
