"""sRGB <-> CIE Lab (D65), as used by pix2pix's colorization mode: L in [0, 100], a/b in about
[-110, 110]; the networks see L/50 - 1 and ab/110."""

import torch

_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> (..., 3, H, W) Lab."""
    linear = torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,...jhw->...ihw", _RGB_TO_XYZ.to(rgb), linear) / _WHITE.to(rgb)[:, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) Lab -> (..., 3, H, W) sRGB in [0, 1] (out-of-gamut colours clipped)."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    xyz = torch.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _WHITE.to(lab)[:, None, None]
    linear = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab), xyz).clamp(0, 1)
    # The powers take inputs clamped to their own branch, so that where's unused branch cannot send an
    # infinite gradient (0 * inf = NaN) back: x ** (1 / 2.4) at x = 0 has none.
    gamma = 1.055 * linear.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
    return torch.where(linear > 0.0031308, gamma, 12.92 * linear).clamp(0, 1)


def rgb_to_model_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 3, H, W) sRGB in [0, 1] -> (L (..., 1, H, W), ab (..., 2, H, W)), both scaled to ~[-1, 1]."""
    lab = rgb_to_lab(rgb)
    return lab[..., :1, :, :] / 50 - 1, lab[..., 1:, :, :] / 110


def model_lab_to_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_model_lab`: -> (..., 3, H, W) sRGB in [0, 1]."""
    return lab_to_rgb(torch.cat([(L + 1) * 50, ab * 110], dim=-3))
