"""SegNet architecture: shapes for any input size, pooling indices reused by the decoder."""

import pytest

torch = pytest.importorskip("torch")

from bigvol.segment.segnet import PRESETS, SegNet  # noqa: E402


@pytest.mark.parametrize("shape", [(37, 50), (1, 1), (16, 16), (17, 9), (64, 3)])
@pytest.mark.parametrize("k", [1, 3])
def test_output_has_input_size_for_any_size(shape, k):
    net = SegNet(k, 3, widths=(4, 8, 8), convs=(1, 1, 2)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, k, *shape))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()


def test_padding_does_not_change_the_image_part():
    # An input already a multiple of 2**depth is not padded: the prediction on the
    # top-left 32x32 crop of a 40x40 image goes through padding, the 32x32 input does not;
    # both run; and a 32x32 input is its own output size.
    net = SegNet(1, 3, widths=(4, 8, 8)).eval()
    assert net.multiple == 8
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a = net(x)
        b = net(torch.nn.functional.pad(x, (0, 8, 0, 8), mode="reflect"))[..., :32, :32]
        c = net(x[..., :29, :30])  # padded by reflection to 32x32 internally
        d = net(torch.nn.functional.pad(x[..., :29, :30], (0, 2, 0, 3), mode="reflect"))
    assert a.shape == (1, 3, 32, 32)
    assert torch.equal(c, d[..., :29, :30])
    assert not torch.equal(a, b)  # the context changes the border (sanity of the check above)


def test_decoder_unpools_with_the_encoder_indices():
    """Each decoder level puts values exactly where its encoder level found the maxima."""
    net = SegNet(1, 3, widths=(4, 8, 16), convs=(1, 1, 1)).eval()
    pools, unpools = [], []
    net.pool.register_forward_hook(lambda m, inp, out: pools.append((inp[0], out[0], out[1])))
    net.unpool.register_forward_hook(
        lambda m, args, kwargs, out: unpools.append((args[0], args[1], out)), with_kwargs=True
    )
    with torch.no_grad():
        net(torch.randn(1, 1, 37, 45))
    assert len(pools) == len(unpools) == 3
    for (pin, pout, pidx), (uin, uidx, uout) in zip(reversed(pools), unpools):
        assert uidx is pidx  # the very indices of the mirrored encoder level
        assert uout.shape == pin.shape  # back to the pre-pooling size (odd sizes included)
        # Independent reference: scatter the decoder input into zeros at the indices.
        ref = torch.zeros_like(uout).flatten(2)
        ref.scatter_(2, pidx.flatten(2), uin.flatten(2))
        assert torch.equal(uout, ref.view_as(uout))
        # and those indices are where the encoder's maxima are
        assert torch.equal(pin.flatten(2).gather(2, pidx.flatten(2)), pout.flatten(2))


def test_paper_preset_is_vgg16_segnet():
    widths, convs = PRESETS["paper"]
    net = SegNet(1, 3, widths, convs)
    n = sum(p.numel() for p in net.parameters())
    # Badrinarayanan et al. 2017, Table 6: SegNet has 29.5 M trainable parameters.
    assert abs(n - 29.5e6) / 29.5e6 < 0.01
    assert len(net.encoders) == 5 and net.multiple == 32
    convs_found = [sum(isinstance(m, torch.nn.Conv2d) for m in enc) for enc in net.encoders]
    assert convs_found == [2, 2, 3, 3, 3]


def test_bad_architecture_is_refused():
    with pytest.raises(ValueError, match="widths"):
        SegNet(1, 3, widths=(8, 16), convs=(1,))
    with pytest.raises(ValueError, match="widths"):
        SegNet(1, 3, widths=())


def test_import_bigvol_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, bigvol, bigvol.segment; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_skips_concatenate_the_encoder_features_before_each_decoder_level():
    """U-SegNet: each decoder level sees the unpooled map and its encoder level's features."""
    net = SegNet(1, 2, widths=(4, 8, 16), convs=(1, 1, 1), skips=True).eval()
    seen = []
    for dec in net.decoders:
        dec.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    feats = []
    for enc in net.encoders:
        enc.register_forward_hook(lambda m, inp, out: feats.append(out))
    with torch.no_grad():
        out = net(torch.randn(1, 1, 37, 45))
    assert out.shape == (1, 2, 37, 45)
    assert seen == [32, 16, 8]  # twice each level's width: unpooled + skip
    # Without skips the same widths give half the decoder inputs, and the two nets differ
    # only by the extra input channels of each level's first decoder convolution.
    plain = SegNet(1, 2, widths=(4, 8, 16), convs=(1, 1, 1))
    extra = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 9 * (16 * 8 + 8 * 4 + 4 * 4)


def test_batchnorm_folded_into_the_convolutions_gives_the_same_outputs():
    from bigvol.segment.segnet import fuse_batchnorm

    torch.manual_seed(0)
    net = SegNet(3, 3, widths=(8, 16, 32))
    with torch.no_grad():  # BatchNorm statistics and affine parameters far from identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 3)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    with pytest.raises(ValueError, match="eval mode"):
        fuse_batchnorm(net)
    net.eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        ref = net(x)
        fused = fuse_batchnorm(net)
        out = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
