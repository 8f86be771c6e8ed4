"""The CIFAR ResNets: shapes, size, structure, and that they train (on the CPU, small batches)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixup_core.config import ModelConfig
from mixup_core.models import build_model
from mixup_core.models.resnet import PreActBlock, preact_resnet18, resnet18

BUILDERS = [resnet18, preact_resnet18]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("num_classes,in_channels,size", [(10, 3, 32), (100, 1, 20)])
def test_output_shape(build, num_classes, in_channels, size):
    torch.manual_seed(0)
    model = build(num_classes, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, num_classes)


def test_parameter_counts_match_the_cifar_references():
    # ResNet-18 CIFAR variant (kuangliu/pytorch-cifar): 11,173,962 parameters for 10 classes.
    assert _params(resnet18(10)) == 11_173_962
    # The Mixup code's PreAct-ResNet-18: kuangliu's 11,171,146 plus the stem's BatchNorm (128).
    assert _params(preact_resnet18(10)) == 11_171_146 + 128
    # CIFAR-100 adds 90 x 513 to the classifier
    assert _params(resnet18(100)) == 11_173_962 + 90 * 513


def test_cifar_stem_keeps_resolution_until_the_last_stage_is_4x4():
    model = resnet18(10).eval()
    seen = {}
    for name in ("conv1", "layer1", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert seen["conv1"][2:] == (32, 32) and seen["layer1"][2:] == (32, 32) and seen["layer4"][1:] == (512, 4, 4)


def test_preact_block_shortcut_takes_the_preactivated_input():
    # As in the Mixup paper's code: out = conv2(relu(bn2(conv1(p)))) + p with p = relu(bn1(x)).
    torch.manual_seed(0)
    block = PreActBlock(8, 8).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        pre = F.relu(block.bn1(x))
        expected = block.conv2(F.relu(block.bn2(block.conv1(pre)))) + pre
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18"])
def test_build_model_dispatches(name):
    model = build_model(ModelConfig(name=name), num_classes=10, input_shape=(3, 32, 32))
    assert _params(model) in (11_173_962, 11_171_274)


@pytest.mark.parametrize("build", BUILDERS)
def test_sgd_steps_reduce_the_loss_on_a_fixed_batch(build):
    torch.manual_seed(0)
    model = build(4)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (8,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():  # still train mode: batch statistics, as during the steps
        losses.append(F.cross_entropy(model(x), y).item())
    assert losses[1] < losses[0] and losses[2] < 0.5 * losses[0], losses


@pytest.mark.parametrize("build", BUILDERS)
def test_channels_last_and_bf16_autocast(build):
    torch.manual_seed(0)
    model = build(10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
    assert out_bf16.dtype == torch.bfloat16 and torch.isfinite(out_bf16.float()).all()
    assert (out_bf16.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
