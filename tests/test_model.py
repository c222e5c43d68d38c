"""Model contract: registry, shapes at odd sizes, gradients, grafting invariants, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hgn_model import create_model, list_models
from hgn_model.errors import ConfigError, UnknownModelError
from hgn_model.grafting import GSAG, LSAG
from hgn_model.layers import AtrousConv2d
from hgn_model.losses import LossWeights, SegLoss, shallow_deep_contrastive

TINY = {"width": 0.125}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_parameter_gets_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 5, **TINY).train()
    x = torch.randn(2, 3, 128, 256)
    y = torch.randint(0, 5, (2, 128, 256))
    loss, parts = SegLoss(5, LossWeights(contrast=0.1))(model.forward_train(x), y)
    loss.backward()
    assert "ce" in parts
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, 128, 256)


def test_hgn_emits_aux_and_contrastive_embeddings_in_training_only() -> None:
    model = create_model("hgn", 4, **TINY).train()
    out = model.forward_train(torch.randn(2, 3, 128, 128))  # BN needs > 1 value in training
    assert {"out", "aux", "shallow_embed", "deep_embed"} <= set(out)
    assert out["shallow_embed"].shape == out["deep_embed"].shape
    model.eval()
    assert set(model.forward_train(torch.randn(1, 3, 128, 128))) == {"out"}


def test_ablations_differ_from_hgn_as_their_names_say() -> None:
    full = create_model("hgn", 4)
    assert len(create_model("hgn_no_gsag", 4).gsag) == 0 < len(full.gsag)
    assert not create_model("hgn_no_lsag", 4).lsag8.align and full.lsag8.align
    assert create_model("hgn_no_contrast", 4).contrast_dim == 0 < full.contrast_dim


def test_hgn_deep_branch_stays_low_resolution() -> None:
    """The deep branch of HGN never holds features finer than 1/16 of the image."""
    model = create_model("hgn", 4, **TINY).eval()
    x = torch.randn(1, 3, 256, 256)
    feats = model.deep(F.avg_pool2d(x, model.downsample))
    assert min(f.shape[-1] for f in feats) == 256 // 128
    assert max(f.shape[-1] for f in feats) == 256 // 16


def test_unknown_model_and_bad_setting_errors_name_them() -> None:
    with pytest.raises(UnknownModelError, match=r"'nope'.*hgn"):
        create_model("nope", 3)
    with pytest.raises(ConfigError, match="hgn"):
        create_model("hgn", 3, not_a_setting=1)


def test_gsag_is_identity_at_init_and_linear_in_pixels() -> None:
    g = GSAG(shallow_ch=16, deep_ch=24, tokens=8, dim=32, heads=4)
    deep, shallow = torch.randn(2, 24, 5, 7), torch.randn(2, 16, 20, 28)
    assert torch.equal(g(deep, shallow), deep)  # zero-initialised gate
    torch.nn.init.ones_(g.gamma)
    assert not torch.allclose(g(deep, shallow), deep)
    # Tokens have a fixed count whatever the shallow size: cost linear in pixels.
    assert g.aggregate(torch.randn(1, 16, 64, 64)).shape == (1, 8, 32)
    assert g.aggregate(torch.randn(1, 16, 8, 8)).shape == (1, 8, 32)


def test_lsag_warp_is_identity_at_init_and_moves_with_offsets() -> None:
    from hgn_model.grafting import _warp

    x = torch.randn(1, 3, 9, 11)
    assert torch.allclose(_warp(x, torch.zeros(1, 2, 9, 11)), x, atol=1e-5)
    shift = torch.zeros(1, 2, 9, 11)
    shift[:, 1] = 1.0  # dx = +1 px: sample one pixel to the right
    assert torch.allclose(_warp(x, shift)[..., :-1], x[..., 1:], atol=1e-5)
    lsag = LSAG(8, 4, 6).eval()
    assert lsag(torch.randn(1, 8, 4, 4), torch.randn(1, 4, 8, 8)).shape == (1, 6, 8, 8)


@pytest.mark.parametrize(("d", "h", "w"), [(2, 20, 20), (4, 21, 19), (18, 20, 20), (6, 7, 33)])
def test_atrous_conv_equals_dilated_conv(d: int, h: int, w: int) -> None:
    conv = AtrousConv2d(5, 7, 3, 1, d, dilation=d)
    x = torch.randn(2, 5, h, w)
    ref = F.conv2d(x, conv.weight, conv.bias, 1, d, d)
    assert torch.allclose(conv(x), ref, atol=1e-5)


def test_contrastive_loss_rewards_alignment_with_deep_prototypes() -> None:
    torch.manual_seed(0)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    deep = protos[target].permute(0, 3, 1, 2)  # deep embedding = class prototype
    aligned = shallow_deep_contrastive(deep.clone(), deep, target, 2, tau=0.1)
    swapped = shallow_deep_contrastive(deep.flip(1), deep, target, 2, tau=0.1)
    assert aligned < 0.01 < swapped
    one_class = shallow_deep_contrastive(deep, deep, torch.zeros_like(target), 2)
    assert float(one_class) == 0.0


def test_contrastive_prototypes_are_fixed_anchors() -> None:
    """Gradients reach the deep side only through its own pixels, never through prototypes."""
    shallow = torch.randn(1, 4, 8, 8, requires_grad=True)
    deep = torch.randn(1, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (1, 8, 8))
    shallow_deep_contrastive(shallow, deep, target, 3, samples=10_000).backward()
    assert shallow.grad is not None and deep.grad is not None
    # With the deep embedding equal to its prototypes, moving deep pixels cannot change them.
    protos = torch.eye(3, 4)
    deep2 = protos[target].permute(0, 3, 1, 2).clone().requires_grad_(True)
    shallow2 = torch.randn(1, 4, 8, 8)
    base = shallow_deep_contrastive(shallow2, deep2, target, 3, samples=10_000)
    base.backward()
    assert float(deep2.grad.abs().max()) < 0.05


def test_tiny_overfit_loss_falls() -> None:
    """A few steps on one fixed crop must reduce the loss: the model and losses can learn."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("hgn", 3, **TINY).train()
    x = torch.from_numpy(rng.normal(size=(2, 3, 128, 128)).astype(np.float32))
    y = torch.zeros(2, 128, 128, dtype=torch.long)
    y[:, :, 64:] = 1
    y[:, 60:68, :] = 2  # a thin horizontal band
    x[:, 0] += y.float()  # the class is visible in band 0
    crit = SegLoss(3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = crit(model.forward_train(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])
