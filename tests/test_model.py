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
from hgn_model.losses import LossWeights, PrototypeBank, SegLoss, shallow_deep_contrastive
from hgn_model.models._base import Detail

TINY = {"width": 0.125}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_parameter_gets_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 5, **TINY).train()
    x = torch.randn(2, 3, 128, 256)
    y = torch.randint(0, 5, (2, 128, 256))
    y[:, :, :128] = 1  # large regions the aux head gets right, so prototypes exist
    crit = SegLoss(5, LossWeights(contrast=0.1))
    crit.bank.protos[:2] = torch.eye(2, 64)  # two anchors: the contrastive term runs
    crit.bank.seen[:2] = True
    loss, parts = crit(model.forward_train(x), y)
    loss.backward()
    assert "ce" in parts
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, 128, 256)


def test_hgn_emits_aux_and_contrastive_embeddings_in_training_only() -> None:
    model = create_model("hgn", 4, **TINY).train()
    out = model.forward_train(torch.randn(2, 3, 128, 128))
    assert {"out", "aux", "shallow_embed", "deep_embed"} <= set(out)
    assert out["shallow_embed"].shape == (2, 64, 16, 16)  # shallow at 1/8
    assert out["deep_embed"].shape[-2:] == out["aux"].shape[-2:] == (4, 4)  # deep-only, 1/32
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


def _deep_inputs(target: torch.Tensor, protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep embeddings equal to the class prototypes and aux logits that are all correct."""
    deep = protos[target].permute(0, 3, 1, 2)
    logits = F.one_hot(target, protos.shape[0]).permute(0, 3, 1, 2).float() * 10
    return deep, logits


def test_contrastive_loss_rewards_alignment_with_deep_prototypes() -> None:
    torch.manual_seed(0)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    deep, logits = _deep_inputs(target, protos)

    def loss(shallow: torch.Tensor, t: torch.Tensor = target) -> float:
        return float(shallow_deep_contrastive(shallow, t, deep, logits, t, PrototypeBank(2, 2)))

    assert loss(deep.clone()) < 0.01 < loss(deep.flip(1))
    one = torch.zeros_like(target)
    d1, l1 = _deep_inputs(one, protos)
    assert float(shallow_deep_contrastive(d1, one, d1, l1, one, PrototypeBank(2, 2))) == 0.0


def test_prototypes_come_from_pixels_the_deep_head_gets_right() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    deep, logits = _deep_inputs(target, protos)
    deep = deep.clone()
    deep[:, :, :, :2] = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)  # class-0 pixels that look
    logits[:, :, :, :2] = torch.tensor([0.0, 10.0]).view(1, 2, 1, 1)  # like 1 and are missed
    bank = PrototypeBank(2, 2)
    shallow_deep_contrastive(deep, target, deep, logits, target, bank)
    assert torch.allclose(bank.protos, protos, atol=1e-6)  # the wrong pixels were left out
    assert bank.seen.all()


def test_contrastive_samples_thin_classes_as_often_as_large_ones() -> None:
    from hgn_model.losses import _balanced_pick

    labels = torch.zeros(10_000, dtype=torch.long)
    labels[:50] = 2  # a thin class: 0.5% of the pixels
    labels[5000:] = 1
    pick = _balanced_pick(labels, torch.tensor([True, True, True, False]), 300)
    counts = torch.bincount(labels[pick], minlength=3)
    assert counts.tolist() == [100, 100, 50]  # every pixel of the thin class, not ~1.5


def test_contrastive_prototypes_are_fixed_anchors() -> None:
    """Gradients reach the deep side only through its own pixels, never through prototypes."""
    shallow = torch.randn(1, 4, 8, 8, requires_grad=True)
    deep = torch.randn(1, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (1, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    shallow_deep_contrastive(shallow, target, deep, logits, target, PrototypeBank(3, 4),
                             samples=10_000).backward()
    assert shallow.grad is not None and deep.grad is not None
    # With the deep embedding equal to its prototypes, moving deep pixels cannot change them.
    protos = torch.eye(3, 4)
    deep2 = protos[target].permute(0, 3, 1, 2).clone().requires_grad_(True)
    base = shallow_deep_contrastive(torch.randn(1, 4, 8, 8), target, deep2, logits, target,
                                    PrototypeBank(3, 4), samples=10_000)
    base.backward()
    assert float(deep2.grad.abs().max()) < 0.05


@pytest.mark.parametrize("name", ["hgn", "isdnet_like", "deep_only"])
def test_training_works_at_batch_1(name: str) -> None:
    """No BatchNorm sees a 1x1 pooled map: one image per step trains (it raised before)."""
    torch.manual_seed(0)
    model = create_model(name, 4, **TINY).train()
    out = model.forward_train(torch.randn(1, 3, 256, 256))
    loss, _ = SegLoss(4, embed_dim=getattr(model, "contrast_dim", 64) or 64)(
        out, torch.randint(0, 4, (1, 256, 256)))
    loss.backward()
    assert torch.isfinite(loss)


def test_detail_crops_run_the_decoder_on_the_crops_and_the_deep_branch_on_the_context() -> None:
    torch.manual_seed(0)
    model = create_model("hgn", 4, **TINY).train()
    x = torch.randn(2, 3, 512, 512)
    detail = Detail.of([[(0, 128), (256, 256)], [(384, 0), (128, 96)]], 128)
    out = model.forward_train(x, detail)
    assert out["out"].shape == (4, 4, 32, 32)  # 2 x 2 crops of 128 px, logits at 1/4
    assert out["aux"].shape == (2, 4, 16, 16)  # deep-only, over the whole 512 px context
    assert out["shallow_embed"].shape[0] == 4 and out["deep_embed"].shape[-1] == 16
    y = torch.randint(0, 4, (2, 512, 512))
    loss, parts = SegLoss(4)(out, detail.crop_labels(y), y)
    loss.backward()
    assert set(parts) == {"ce", "aux", "contrast"}
    # a detail crop covering the whole context is the plain forward pass
    model.eval()
    with torch.no_grad():
        whole = model.forward_train(x[:1], Detail.of([[(0, 0)]], 512))["out"]
        assert torch.allclose(whole, model.forward_train(x[:1])["out"], atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 32"):
        Detail.of([[(10, 0)]], 128)


def test_aux_head_and_prototype_embedding_are_truly_deep_only() -> None:
    """The shallow branch reaches neither the aux logits nor the deep embedding (no graft)."""
    torch.manual_seed(0)
    model = create_model("hgn", 4, **TINY).train()
    for g in model.gsag.values():  # open the zero-initialised grafts
        torch.nn.init.ones_(g.gamma)
    x = torch.randn(2, 3, 256, 256)
    torch.manual_seed(1)
    a = model.forward_train(x)
    with torch.no_grad():
        for p in model.shallow.parameters():
            p.add_(torch.randn_like(p))
    torch.manual_seed(1)
    b = model.forward_train(x)
    assert not torch.allclose(a["out"], b["out"])  # the grafts and LSAG carry shallow features
    assert torch.equal(a["aux"], b["aux"]) and torch.equal(a["deep_embed"], b["deep_embed"])


def test_one_pass_coarse_resampling_equals_bilinear_upsampling_at_zero_offset() -> None:
    from hgn_model.grafting import _sample_up

    x = torch.randn(2, 5, 7, 9)
    ref = F.interpolate(x, size=(14, 18), mode="bilinear", align_corners=False)
    assert torch.allclose(_sample_up(x, torch.zeros(2, 2, 14, 18), (14, 18)), ref, atol=1e-5)


def test_format1_settings_rebuild_the_old_architectures() -> None:
    from hgn_model.registry import format1_settings

    old = create_model("hgn", 4, **format1_settings("hgn"))
    assert old.graft == "trunk" and sorted(old.gsag) == ["0", "1", "2"]
    assert isinstance(old.context.branches[0][1], torch.nn.BatchNorm2d)
    assert format1_settings("hgn_no_gsag").get("gsag_stages") is None  # the ablation's own


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
    for _ in range(50):
        loss, _ = crit(model.forward_train(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
