"""Models and inputs the tests share: the golden generator, module cases and batch, random weights, the error measure."""

from __future__ import annotations

import torch
from torch import nn

from lama_fast.inpaint import pad_to_modulo
from lama_fast.model import FFC_BN_ACT, SpectralTransform, build_generator


def scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(1, |want|): absolute for values in [0, 1], relative for large activations."""
    got, want = got.double(), want.double()
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item()


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Random conv weights at the golden cases' scale and non-trivial BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.5 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return module.eval()


def golden_generator(golden_dir, dtype):
    """The tiny golden checkpoint's generator (reference model) in ``dtype``, eval mode."""
    return saved_generator(torch.load(golden_dir / "tiny" / "checkpoint.ckpt", weights_only=True), dtype)


def saved_generator(saved, dtype):
    """The generator of a golden file (its ``generator_config``, weights stored float32 under ``generator.``)
    in ``dtype``, eval mode."""
    generator = build_generator(saved["generator_config"])
    prefix = "generator."
    state = {k[len(prefix):]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)}
    generator.load_state_dict(state, strict=True)
    return generator.to(dtype).eval()


def golden_module(golden_case, name):
    """The golden case ``name`` ("spectral_case" or "ffc_case") and its module with the case's weights, eval mode."""
    case = golden_case(name)
    if name == "spectral_case":
        module = SpectralTransform(96, 96, enable_lfu=False)
    else:
        module = FFC_BN_ACT(128, 128, 3, 0.75, 0.75, padding=1, activation=True, enable_lfu=False)
    module.load_state_dict(case["state_dict"], strict=True)
    return case, module.eval()


def golden_batch(case, dtype):
    """The golden inpaint case as the generator's input: padded image with the hole blanked, then the mask."""
    image = case["image"].permute(2, 0, 1).double() / 255
    mask = (case["mask"] > 0).double()[None]
    image, mask = pad_to_modulo(image), pad_to_modulo(mask)
    return torch.cat((image * (1 - mask), mask))[None].to(dtype)

