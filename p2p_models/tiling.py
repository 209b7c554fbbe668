"""Running a fully convolutional generator at any size: reflection-padded to the network's multiple
and cropped back (`run_padded`), or tile by tile with overlapping tiles blended (`run_tiled`)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

SIZE_MODES = ("resize", "native", "tiled")

Network = Callable[[torch.Tensor], torch.Tensor]


def padded_size(size: int, factor: int, minimum: int) -> int:
    """The smallest multiple of `factor` that is at least `size` and `minimum`."""
    return max(-(-size // factor) * factor, minimum)


def reflect_pad(x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, int, int]:
    """(B, C, H, W) -> (B, C, height, width), mirrored about its edges (repeatedly, for a pad wider
    than the image; edge pixels repeated where a side is 1 pixel), centred. Returns (padded, top, left)."""
    top = left = 0
    while x.shape[-2] < height or x.shape[-1] < width:
        h, w = x.shape[-2:]
        dh, dw = min(height - h, h - 1), min(width - w, w - 1)
        if dh == 0 and h < height or dw == 0 and w < width:  # a 1-pixel side can't be mirrored
            dh, dw = height - h, width - w
            mode = "replicate"
        else:
            mode = "reflect"
        t, lf = dh // 2, dw // 2
        x = F.pad(x, (lf, dw - lf, t, dh - t), mode=mode)
        top, left = top + t, left + lf
    return x, top, left


def run_padded(net: Network, x: torch.Tensor, factor: int, minimum: int = 0) -> torch.Tensor:
    """`net` on `x` (B, C, H, W) at its own size: reflection-padded to a multiple of `factor` (and at
    least `minimum`) per side, run, and cropped back -> (B, C_out, H, W)."""
    h, w = x.shape[-2:]
    padded, top, left = reflect_pad(x, padded_size(h, factor, minimum), padded_size(w, factor, minimum))
    return net(padded)[..., top:top + h, left:left + w]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `size` pixels, neighbours sharing at least
    `overlap` pixels (the last tile ends at the border)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(size - tile) // stride) + 1
    return [round(k * (size - tile) / (count - 1)) for k in range(count)]


def blend_window(height: int, width: int, overlap: int, device=None) -> torch.Tensor:
    """(1, 1, height, width) weights rising linearly over `overlap` pixels from each edge (never 0),
    so overlapping tiles fade into each other."""
    def ramp(n):
        d = torch.minimum(torch.arange(n, device=device), torch.arange(n - 1, -1, -1, device=device)).float()
        return ((d + 1) / (overlap + 1)).clamp(max=1)

    return (ramp(height)[:, None] * ramp(width)[None, :])[None, None]


def run_tiled(net: Network, x: torch.Tensor, tile: tuple[int, int], overlap: int, factor: int,
              minimum: int = 0) -> torch.Tensor:
    """`net` on `x` (B, C, H, W) tile by tile: tiles of `tile` (height, width) pixels, each a
    multiple of `factor`, overlapping by at least `overlap` pixels and blended with linear ramps
    (`blend_window`); an input smaller than a tile is run padded (`run_padded`). Peak memory is
    that of one tile plus the (B, C_out, H, W) output. Returns (B, C_out, H, W)."""
    th, tw = tile
    if th % factor or tw % factor or min(th, tw) < minimum:
        raise ValueError(f"tile_size {th}x{tw} must be divisible by the network's factor {factor}"
                         f"{f' and at least {minimum}' if minimum else ''}")
    if not 0 <= overlap < min(th, tw):
        raise ValueError(f"tile_overlap must lie in [0, {min(th, tw)}) for tiles of {th}x{tw}, got {overlap}")
    h, w = x.shape[-2:]
    if h <= th and w <= tw:
        return run_padded(net, x, factor, minimum)
    if h < th or w < tw:  # one side fits in a tile: pad that side to the tile
        x, top, left = reflect_pad(x, max(h, th), max(w, tw))
        return run_tiled(net, x, tile, overlap, factor, minimum)[..., top:top + h, left:left + w]
    out = weights = None
    window = blend_window(th, tw, overlap, x.device)
    for y0 in tile_starts(h, th, overlap):
        for x0 in tile_starts(w, tw, overlap):
            y = net(x[..., y0:y0 + th, x0:x0 + tw]).float()
            if out is None:
                out = torch.zeros(*y.shape[:2], h, w, device=y.device)
                weights = torch.zeros(1, 1, h, w, device=y.device)
            out[..., y0:y0 + th, x0:x0 + tw] += y * window
            weights[..., y0:y0 + th, x0:x0 + tw] += window
    return out / weights


def check_size_mode(size_mode: str) -> None:
    if size_mode not in SIZE_MODES:
        raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {size_mode!r}")


def tile_pair(tile_size, default: tuple[int, int]) -> tuple[int, int]:
    """`tile_size` (None, an int or (height, width)) as (height, width); None -> `default`."""
    if tile_size is None:
        return tuple(default)
    pair = (tile_size, tile_size) if isinstance(tile_size, int) else tuple(tile_size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ValueError(f"tile_size must be a positive int or (height, width), got {tile_size!r}")
    return pair


def run_at_size(net: Network, x: torch.Tensor, size_mode: str, factor: int, tile: tuple[int, int], overlap: int,
                minimum: int = 0) -> torch.Tensor:
    """`net` on `x` (B, C, H, W) as `size_mode` says: `resize` (x is already at a size the network
    takes), `native` (`run_padded`) or `tiled` (`run_tiled`). Returns (B, C_out, H, W)."""
    if size_mode == "native":
        return run_padded(net, x, factor, minimum)
    if size_mode == "tiled":
        return run_tiled(net, x, tile, overlap, factor, minimum)
    return net(x)
