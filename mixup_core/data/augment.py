"""Batched image augmentation and normalisation, done on the device on a whole batch at once.

Random crop (zero padding, as torchvision's `RandomCrop(size, padding=4)`) and random horizontal flip
are expressed as one gather per spatial axis: each example's crop offset, and its flip, become a row
index and a column index into the zero-padded batch. That is a handful of kernels per batch, whatever
the batch size, with no Python loop over examples and no host synchronisation (all random numbers are
drawn on the device from the caller's `torch.Generator`), so the result is a deterministic function of
the batch and the generator state.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def draw_crop_flip(
    n: int, pad: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example shifts dy, dx in [-pad, pad] and flip flags, drawn on `device` from `generator`."""
    shifts = torch.randint(-pad, pad + 1, (2, n), generator=generator, device=device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    return shifts[0], shifts[1], flip


def crop_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Shift each image of `x` [N, C, H, W] by (dy, dx) pixels with zero fill, then mirror it where `flip`.

    Output pixel (i, j) of example n is input pixel (i + dy[n], j' + dx[n]) where j' = W-1-j if flipped
    else j (pixels outside the image are 0). dy = dx = 0 and no flip returns the input unchanged. This
    is exactly a `RandomCrop(padding=pad)` crop at offset (pad + dy, pad + dx) followed by a flip.
    Shifts must lie in [-pad, pad] (unchecked: a check would synchronise with the device).
    Works for any dtype (uint8 included), on any device.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a batch [N, C, H, W], got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    # Column j of a flipped crop is column W-1-j of the unflipped one (crop, then flip: the usual order).
    cols = torch.where(flip[:, None], (w - 1) - cols[None, :], cols[None, :])  # [N, W]
    row_idx = rows[None, :] + (dy[:, None] + pad)  # [N, H], in [0, H + 2 pad) for |dy| <= pad
    col_idx = cols + (dx[:, None] + pad)  # [N, W]
    # Gather rows, then columns; the index tensors broadcast over channels (and the other axis).
    wp = padded.shape[-1]
    out = padded.gather(2, row_idx[:, None, :, None].expand(n, c, h, wp))
    out = out.gather(3, col_idx[:, None, None, :].expand(n, c, h, w))
    return out


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding and (if `flip`) random horizontal flip of a batch
    [N, C, H, W].

    The random numbers come from `generator`; for no host syncs it should live on `x`'s device (a
    generator on another device still works, at the cost of a small copy per batch). The same numbers
    are drawn whatever `pad` and `flip` are, so the generator advances alike in every setting.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    gen_device = generator.device
    if gen_device.type == x.device.type and (gen_device.index in (None, x.device.index)):
        dy, dx, flips = draw_crop_flip(x.shape[0], pad, generator, x.device)
    else:
        drawn = draw_crop_flip(x.shape[0], pad, generator, gen_device)
        dy, dx, flips = (t.to(x.device) for t in drawn)
    if not flip:
        flips = torch.zeros_like(flips)
    return crop_flip(x, dy, dx, flips, pad)


class Normalize:
    """Per-channel (x * scale - mean) / std into float32, with uint8 input read as pixel / 255.

    Precomputes one multiply-add per channel so that a batch costs a single fused pass on the device.
    """

    def __init__(
        self,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
        device: torch.device,
        uint8_input: bool,
    ):
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if (std_t <= 0).any():
            raise ValueError("std must be positive in every channel")
        pixel = 1.0 / 255.0 if uint8_input else 1.0
        # y = x * pixel / std - mean / std, computed in float64 once, applied in float32.
        self.scale = (pixel / std_t).to(torch.float32).view(1, -1, 1, 1).to(device)
        self.shift = (-mean_t / std_t).to(torch.float32).view(1, -1, 1, 1).to(device)
        self.mean = mean_t.tolist()
        self.std = std_t.tolist()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.to(torch.float32), self.scale)


class ImagePipeline:
    """The `prepare_train` / `prepare_eval` pair of a `TrialData` for images held raw on the device.

    prepare_train: the augmentation (`config.resolve_augment`: False, or a random crop with
    `crop_pad` and/or flips) on the raw batch, then normalise to float32.
    prepare_eval: normalise only. The generator argument of prepare_eval is ignored.
    """

    def __init__(self, normalize: Normalize, augment: Union[bool, AugmentConfig]):
        if augment is True:  # resolved choices only: True would hide which crop is applied
            raise ValueError("ImagePipeline takes a resolved augmentation (False or an AugmentConfig)")
        self.normalize = normalize
        self.augment = augment if augment and augment.active else None

    def prepare_train(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.augment is not None:
            if generator is None:
                raise ValueError("prepare_train needs a torch.Generator to draw the augmentation from")
            x = random_crop_flip(x, generator, self.augment.crop_pad, self.augment.flip)
        return self.normalize(x)

    def prepare_eval(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.normalize(x)
