"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentations of everything the
discriminator sees, real and generated alike, in its step and in the generator's, so D cannot
overfit a small training set and G's gradients pass through the augmentation.

For a conditional D the pair must stay aligned: the geometric transforms (translation, cutout)
move the condition and the image of a pair identically. The colour transforms change only the
image: the condition may be a one-hot label map (pix2pixHD), which a brightness shift would
corrupt.
"""

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _uniform(generator: torch.Generator, batch: int, like: torch.Tensor, low=0.0, high=1.0) -> torch.Tensor:
    """(B, 1, 1, 1) uniform draws from `generator` (on the CPU), moved to `like`'s device and dtype."""
    u = torch.rand(batch, 1, 1, 1, generator=generator)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def color(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), per image."""
    b = len(image)
    image = image + _uniform(generator, b, image, -0.5, 0.5)
    mean = image.mean(1, keepdim=True)
    image = (image - mean) * _uniform(generator, b, image, 0.0, 2.0) + mean
    mean = image.mean((1, 2, 3), keepdim=True)
    return (image - mean) * _uniform(generator, b, image, 0.5, 1.5) + mean


def translation(tensors: list[torch.Tensor], generator: torch.Generator, ratio: float = 0.125) -> list[torch.Tensor]:
    """Shift each pair by the same random whole pixels, up to `ratio` of H and W, filling with 0."""
    b, _, h, w = tensors[0].shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_y, max_y + 1, (b, 1, 1), generator=generator)
    dx = torch.randint(-max_x, max_x + 1, (b, 1, 1), generator=generator)
    # Source row/column of every output pixel in the 1-pixel zero-padded input.
    rows = (torch.arange(h)[None, :, None] - dy + 1).clamp(0, h + 1).expand(b, h, w)
    cols = (torch.arange(w)[None, None, :] - dx + 1).clamp(0, w + 1).expand(b, h, w)
    out = []
    for t in tensors:
        padded = F.pad(t, [1, 1, 1, 1])
        index = (rows * (w + 2) + cols).to(t.device).reshape(b, 1, h * w).expand(-1, t.shape[1], -1)
        out.append(padded.flatten(2).gather(2, index).reshape(t.shape))
    return out


def cutout(tensors: list[torch.Tensor], generator: torch.Generator, ratio: float = 0.5) -> list[torch.Tensor]:
    """Zero the same random rectangle (`ratio` of H by `ratio` of W, centred anywhere) in each pair."""
    b, _, h, w = tensors[0].shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), (b, 1, 1), generator=generator)
    cx = torch.randint(0, w + (1 - size_x % 2), (b, 1, 1), generator=generator)
    ys = torch.arange(h)[None, :, None] - cy + size_y // 2
    xs = torch.arange(w)[None, None, :] - cx + size_x // 2
    keep = ~((ys >= 0) & (ys < size_y) & (xs >= 0) & (xs < size_x))
    return [t * keep[:, None].to(device=t.device, dtype=t.dtype) for t in tensors]


class DiffAugment:
    """The `policy` transforms, in the order color, translation, cutout, drawn from its own
    `torch.Generator` (seeded; its state is saved in training checkpoints through `state_dict`, so
    a resumed run draws what the uninterrupted one would).

    Call: `augment(condition (B, C_c, H, W), image (B, C, H, W))` -> both augmented, shapes kept.
    """

    def __init__(self, policy: list[str], seed: int = 0):
        unknown = set(policy) - set(POLICIES)
        if unknown:
            raise ValueError(f"DiffAugment policies are {', '.join(POLICIES)}; got {sorted(unknown)}")
        self.policy = [p for p in POLICIES if p in policy]
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, condition: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "color" in self.policy:
            image = color(image, self.generator)
        if "translation" in self.policy:
            condition, image = translation([condition, image], self.generator)
        if "cutout" in self.policy:
            condition, image = cutout([condition, image], self.generator)
        return condition, image

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
