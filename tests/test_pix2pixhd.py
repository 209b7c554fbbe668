import io

import numpy as np
import pytest
import torch
from torch import nn
from conftest import ROOT, seeded
from reference_layout import RefEncoder, RefGlobal, RefLocal, RefMultiscaleD
from safetensors.torch import save_file

from p2p_models import (
    FeatureEncoder,
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    Pix2PixHDPipeline,
    StyleBank,
    VGGLoss,
    feature_matching_loss,
    load_vgg19,
)
from p2p_models.labels import colors_to_ids, connected_instances, instance_average, instance_boundaries, one_hot
from p2p_models.style_bank import instance_features, kmeans
from p2p_models.vgg import VGG19Features


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_reference_label2city_configs():
    """label2city: 35 labels + boundary map = 36 channels in; G1 ngf 64 (512p), G2 ngf 32 (1024p),
    D on 36 + 3 channels, E with nef 16; counts against the reference's module layout."""
    assert n_params(GlobalGenerator(36, 3, 64, 4, 9)) == n_params(RefGlobal(36, 3, 64, 4, 9)) == 182_546_755
    assert n_params(LocalEnhancer(36, 3, 32, 4, 9, 1, 3)) == n_params(RefLocal(36, 3, 32, 4, 9, 1, 3))
    for num_d in (2, 3):
        assert n_params(MultiscaleDiscriminator(39, 64, 3, num_d)) == n_params(RefMultiscaleD(39, 64, 3, num_d))
    assert n_params(FeatureEncoder(3, 3, 16, 4)) == n_params(RefEncoder(3, 3, 16, 4))


@pytest.mark.parametrize("size", [(256, 512), (512, 1024)])
def test_generator_shapes(size):
    x = torch.randn(1, 13, *size)
    with torch.no_grad():
        assert GlobalGenerator(13, 3, ngf=4, n_downsampling=4, n_blocks=1)(x).shape == (1, 3, *size)
        assert LocalEnhancer(13, 3, ngf=2, n_blocks_global=1, n_blocks_local=1)(x).shape == (1, 3, *size)
        assert LocalEnhancer(13, 3, ngf=2, n_local_enhancers=2, n_blocks_global=1, n_blocks_local=1)(x).shape == \
            (1, 3, *size)


def test_local_enhancer_sums_g1_features_with_its_front_end():
    torch.manual_seed(0)
    g1 = GlobalGenerator(5, 3, ngf=8, n_downsampling=2, n_blocks=1)
    g2 = LocalEnhancer.from_global(g1, n_local_enhancers=1, n_blocks_local=1)
    assert g2.config.ngf == 4
    for k, v in g2.global_layers.state_dict().items():
        assert torch.equal(v, g1.layers.state_dict()[k])  # trained G1 loaded into G2
    x = torch.randn(1, 5, 64, 64)
    with torch.no_grad():
        coarse = g2.global_layers(g2.pool(x))
        front = g2.enhancers[0].downsample(x)
        assert coarse.shape == front.shape  # summed element-wise
        expected = g2.enhancers[0].upsample(front + coarse)
        assert torch.equal(g2(x), expected)


def test_multiscale_discriminator_returns_every_layer_per_scale():
    d = MultiscaleDiscriminator(6, ndf=4, n_layers=3, num_d=3).eval()
    out = d(torch.randn(1, 6, 128, 128))
    assert len(out) == 3 and all(len(scale) == 5 for scale in out)
    assert [scale[-1].shape[1] for scale in out] == [1, 1, 1]
    assert out[0][-1].shape[-1] > out[1][-1].shape[-1] > out[2][-1].shape[-1]


def test_boundary_map_on_hand_made_ids():
    ids = torch.tensor([[1, 1, 2],
                        [1, 1, 2],
                        [3, 3, 3]])[None, None]
    expected = torch.tensor([[0, 1, 1],
                             [1, 1, 1],
                             [1, 1, 1]]).float()
    assert torch.equal(instance_boundaries(ids)[0, 0], expected)
    assert instance_boundaries(torch.zeros(1, 1, 4, 5, dtype=torch.long)).sum() == 0  # image borders are no edges
    stripe = torch.zeros(1, 1, 3, 4, dtype=torch.long)
    stripe[..., 3] = 1
    assert torch.equal(instance_boundaries(stripe)[0, 0], torch.tensor([[0, 0, 1, 1.]] * 3))


def test_instance_average_is_exact():
    inst = torch.tensor([[0, 0, 5],
                         [7, 7, 5]])[None, None]
    feat = torch.tensor([[[1., 3, 10], [4, 8, 20]], [[0., 2, 1], [1, 1, 1]]])[None]
    out = instance_average(feat, inst)
    assert torch.equal(out[0, 0], torch.tensor([[2., 2, 15], [6, 6, 15]]))
    assert torch.equal(out[0, 1], torch.tensor([[1., 1, 1], [1, 1, 1]]))


def test_one_hot_and_palette_snapping():
    ids = torch.tensor([[0, 2], [1, 2]])[None, None]
    oh = one_hot(ids, 3)
    assert oh.shape == (1, 3, 2, 2) and torch.equal(oh.argmax(1), ids[:, 0])
    with pytest.raises(ValueError, match="label ids must lie in \\[0, 2\\)"):
        one_hot(ids, 2)
    from PIL import Image
    noisy = Image.fromarray(np.array([[[250, 3, 4], [2, 0, 251]]], dtype=np.uint8))
    assert colors_to_ids(noisy, [[0, 0, 0], [255, 0, 0], [0, 0, 255]]).tolist() == [[1, 2]]


def test_feature_matching_weights():
    n_layers, num_d = 3, 2
    fake = [[torch.ones(1, 2, 4, 4)] * (n_layers + 2) for _ in range(num_d)]
    real = [[torch.zeros(1, 2, 4, 4)] * (n_layers + 2) for _ in range(num_d)]
    # every layer but the logits: (n_layers + 1) * 4 / (n_layers + 1) * 1 / num_d per scale, num_d scales
    assert feature_matching_loss(fake, real, lambda_feat=10.0).item() == pytest.approx(40.0)
    real[1][0] = torch.full((1, 2, 4, 4), 3.0)  # |1 - 3| on one layer of one scale
    assert feature_matching_loss(fake, real, 10.0).item() == pytest.approx(40.0 + 10 * 1 / num_d * 1.0)


def test_vgg_loss_loads_weights_and_matches_a_hand_computation(tmp_path):
    torch.manual_seed(0)
    vgg = VGG19Features()
    state = {"module." + k: v for k, v in vgg.state_dict().items()}
    state["module.classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    save_file(state, tmp_path / "vgg19.safetensors")
    loaded = load_vgg19(tmp_path / "vgg19.safetensors")
    loss = VGGLoss(loaded)
    x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    fx, fy = vgg(x), vgg(y)
    expected = sum(w * (a - b).abs().mean() for w, a, b in zip([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1], fx, fy))
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss(x, x).item() == 0
    assert [f.shape[1] for f in fx] == [64, 128, 256, 512, 512]
    assert not any(p.requires_grad for p in loss.parameters())
    with pytest.raises(ValueError, match="needs ImageNet VGG19 weights.*--no_vgg_loss"):
        load_vgg19(None)
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="not a VGG19 state dict"):
        load_vgg19(tmp_path / "partial.safetensors")


def test_kmeans_is_reproducible_and_finds_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 3, generator=g) * 0.1 + c for c in (-5.0, 0.0, 5.0)])
    a, b = kmeans(x, 3, seed=1), kmeans(x, 3, seed=1)
    assert torch.equal(a, b)
    assert sorted(a[:, 0].round().tolist()) == [-5.0, 0.0, 5.0]
    assert kmeans(x[:2], 10).shape == (2, 3)  # never more centres than points


def hd_pipe(norm="batch", use_bank=True, upsampling="transposed"):
    torch.manual_seed(0)
    classes, feat = 4, 3
    g = GlobalGenerator(classes + 1 + (feat if use_bank else 0), 3, ngf=4, n_downsampling=2, n_blocks=1, norm=norm,
                        upsampling=upsampling)
    bank = None
    if use_bank:
        bank = StyleBank(num_classes=classes, feat_num=feat, k=3)
        bank.fit([(c, torch.randn(feat) * 3) for c in range(classes) for _ in range(6)])
    enc = FeatureEncoder(3, feat, nef=4, n_downsampling=2, norm=norm) if use_bank else None
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    return Pix2PixHDPipeline(generator=g.eval(), encoder=enc, style_bank=bank, label_nc=classes,
                             image_size=[64, 256], palette=palette, id2label={0: "bg", 1: "car", 2: "road", 3: "sky"})


def scene():
    labels = np.zeros((64, 256), np.int64)
    labels[:32] = 3
    labels[40:, :] = 2
    labels[44:60, 8:40] = 1  # car 1 (left)
    labels[44:60, 200:240] = 1  # car 2 (right)
    inst = labels.copy()
    inst[44:60, 200:240] = 11
    return labels, inst


def test_style_edit_changes_only_that_instance():
    pipe = hd_pipe()
    labels, inst = scene()
    base = np.asarray(pipe(labels, inst, generator=seeded(0)).images[0]).astype(int)
    again = np.asarray(pipe(labels, inst, generator=seeded(0)).images[0])
    assert np.array_equal(base, again)  # same seed, same choices
    edited = pipe(labels, inst, generator=seeded(0), instance_styles={1: [9.0, -9.0, 9.0]}).images[0]
    edited = np.asarray(edited).astype(int)
    changes = np.abs(edited - base).sum(-1) > 0
    assert changes[44:60, 8:40].any()
    # BatchNorm in eval mode makes G local: nothing changes farther than its receptive field from car 1
    assert not changes[:, 100:].any()
    only_right = pipe(labels, inst, generator=seeded(0), instance_styles={11: [9.0, -9.0, 9.0]}).images[0]
    only_right = np.asarray(only_right).astype(int)
    diff = np.abs(only_right - base).sum(-1) > 0
    assert diff[44:60, 200:240].any() and not diff[:, :120].any()


def test_class_styles_and_seeds():
    pipe = hd_pipe()
    labels, inst = scene()
    a = np.asarray(pipe(labels, inst, styles={2: 0}, generator=seeded(0)).images[0])
    b = np.asarray(pipe(labels, inst, styles={2: 1}, generator=seeded(0)).images[0])
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="style cluster 7 for class 2"):
        pipe(labels, inst, styles={2: 7})
    seeds = {tuple(np.asarray(pipe(labels, inst, generator=seeded(s)).images[0]).ravel()[:2000]) for s in range(4)}
    assert len(seeds) > 1  # random clusters differ between seeds


def test_colour_label_maps_and_errors(tmp_path):
    from PIL import Image

    pipe = hd_pipe(norm="instance")
    labels, inst = scene()
    colour = Image.fromarray(np.asarray(pipe.config.palette, np.uint8)[labels])
    from_colours = pipe(colour, inst, generator=seeded(3)).images[0]
    assert np.array_equal(np.asarray(from_colours), np.asarray(pipe(labels, inst, generator=seeded(3)).images[0]))
    assert pipe(labels, generator=seeded(0)).images[0].size == (256, 64)
    with pytest.raises(ValueError, match="ids must lie in \\[0, 4\\)"):
        pipe(labels + 4)
    with pytest.raises(ValueError, match="instance_map is"):
        pipe(labels, inst[:10])
    with pytest.raises(TypeError, match="expected a PIL image or an"):
        pipe("labels.png")
    pipe.save_pretrained(tmp_path)
    loaded = Pix2PixHDPipeline.from_pretrained(tmp_path)
    assert loaded.config.palette == pipe.config.palette and loaded.config.id2label["1"] == "car"
    out = loaded(labels, inst, generator=seeded(5)).images[0]
    assert np.array_equal(np.asarray(out), np.asarray(pipe(labels, inst, generator=seeded(5)).images[0]))
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 256, 3), dtype=np.uint8))
    assert loaded(labels, inst, style_image=photo).images[0].size == (256, 64)


def test_pipeline_checks_channels():
    g = GlobalGenerator(7, 3, ngf=4, n_downsampling=2, n_blocks=1)
    with pytest.raises(ValueError, match="the generator takes 7 channels, but 4 classes"):
        Pix2PixHDPipeline(generator=g, label_nc=4)


def test_instance_features_keep_large_instances_with_their_majority_class():
    instances = torch.zeros(16, 16, dtype=torch.long)
    instances[:8] = 1
    instances[0, 0] = 2  # a 1-pixel instance: below 1/64 of the image, dropped
    labels = torch.full((16, 16), 4)
    labels[:8] = 7
    labels[7, :3] = 4  # a few stray pixels do not change instance 1's class
    features = torch.zeros(3, 16, 16)
    features[:, :8] = torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    found = dict((cls, f.tolist()) for cls, f in instance_features(features, instances, labels))
    assert found == {4: [0.0, 0.0, 0.0], 7: [1.0, 2.0, 3.0]}


def camvid_like_pipe(**kwargs):
    """A tiny pipeline with the CamVid classes, palette and countable classes (connected instances)."""
    from p2p_models import camvid

    torch.manual_seed(0)
    bank = StyleBank(num_classes=12, feat_num=3, k=4)
    bank.centers.normal_()
    bank.counts.fill_(4)
    return Pix2PixHDPipeline(generator=GlobalGenerator(12 + 1 + 3, 3, ngf=4, n_downsampling=2, n_blocks=1).eval(),
                             style_bank=bank, label_nc=12, image_size=[48, 64], palette=camvid.COLORS,
                             id2label=dict(enumerate(camvid.CLASS_NAMES)),
                             countable_classes=list(camvid.COUNTABLE), **kwargs)


def test_random_label_maps_are_refused_fast_not_synthesised_per_instance():
    """The probe that ran 100 s: a 480x360 map of random class colours (29k car/pole/... regions)."""
    from PIL import Image

    pipe = camvid_like_pipe()
    ids = np.random.default_rng(0).integers(0, 12, (360, 480))
    colours = Image.fromarray(np.asarray(pipe.config.palette, np.uint8)[ids])
    for label_map in (colours, ids):
        with pytest.raises(ValueError, match="lie on a class boundary .* looks like noise or a photo"):
            pipe(label_map, generator=seeded(0))
    # a random 16-bit instance map: noise, and far more instances than any label map has
    instances = np.random.default_rng(1).integers(0, 2**16, (360, 480))
    with pytest.raises(ValueError, match="lie on an instance boundary .* looks like noise or a photo"):
        pipe(np.full((360, 480), 3), instances, generator=seeded(0))
    # 3,600 instances, regions of 12x16 pixels (not noise): over the limit
    blocks = np.arange(60 * 60).reshape(60, 60).repeat(12, 0).repeat(16, 1)
    with pytest.raises(ValueError, match="hold \\d+ instances, more than this pipeline's limit of 2000"):
        pipe(np.full((720, 960), 3), blocks, generator=seeded(0))


def test_many_instances_cost_one_pass_and_match_the_per_instance_definition():
    """1,900 instances (under the limit): every instance gets its own cluster draw, and the feature
    map equals the per-instance definition (mask by mask), computed here the slow way."""
    pipe = camvid_like_pipe()
    labels = torch.full((1, 1, 200, 190), 3)
    instances = torch.arange(1900).repeat_interleave(20).view(1, 1, 200, 190)
    labels[instances % 2 == 1] = 8
    feat = pipe.style_features(labels, instances, styles={3: 1}, instance_styles={5: [1.0, 2.0, 3.0]}, seed=4)
    for inst in (0, 5, 7, 1899):
        mask = instances[0, 0] == inst
        cls = int(labels[0, 0][mask][0])
        expected = (torch.tensor([1.0, 2.0, 3.0]) if inst == 5 else
                    pipe.style_bank.style(cls, {3: 1}.get(cls), np.random.default_rng([4, inst])))
        assert torch.equal(feat[0][:, mask], expected[:, None].expand(-1, int(mask.sum())))


def test_photos_are_not_label_maps():
    from PIL import Image

    pipe = camvid_like_pipe()
    photo = Image.open(ROOT / "examples" / "colorization" / "101085.jpg").convert("RGB")
    with pytest.raises(ValueError, match="far from every class colour in the palette, so it looks like a photo"):
        pipe(photo, generator=seeded(0))
    # a label map with JPEG noise is still one
    label_map = Image.open(ROOT / "examples" / "hd" / "camvid_0016E5_07997.png")
    buffer = io.BytesIO()
    label_map.save(buffer, "JPEG", quality=75)
    assert pipe(Image.open(buffer), generator=seeded(0)).images[0].size == label_map.size


def test_more_than_1000_regions_of_a_class_do_not_collide_with_the_next_class():
    labels = np.full((64, 128), 3)
    labels[::2, ::2] = 8  # 2,048 separate one-pixel cars
    with pytest.raises(ValueError, match="class 8 has 2048 separate regions; at most 1000"):
        connected_instances(labels, (8,))
    from p2p_models import camvid

    city = np.full((64, 128), 7)  # road, with Cityscapes instances: components must stay below 500
    city[::4, ::4] = 17  # 512 poles
    with pytest.raises(ValueError, match="class 2 has 512 separate regions; at most 500"):
        camvid.from_cityscapes(city, np.zeros((64, 128), np.int64))


def test_bad_maps_and_styles_get_specific_errors():
    pipe = camvid_like_pipe()
    labels = np.full((48, 64), 3)
    labels[10:20, 10:30] = 8
    with pytest.raises(ValueError, match="instance_map: ids must be non-negative, found -5"):
        pipe(labels, np.full((48, 64), -5))
    with pytest.raises(ValueError, match="label_map: is empty \\(0x0\\)"):
        pipe(np.zeros((0, 0), np.int64))
    with pytest.raises(ValueError, match="3 finite numbers"):
        pipe(labels, generator=seeded(0), instance_styles={8000: [float("nan"), 0.0, 0.0]})
    with pytest.raises(ValueError, match="3 finite numbers"):
        pipe(labels, generator=seeded(0), instance_styles={8000: [1.0, 2.0]})
    pipe.max_pixels = 100
    with pytest.raises(ValueError, match="label_map: 64x48 is 3,072 pixels, over this pipeline's limit of 100"):
        pipe(labels)
    pipe.max_pixels = None
    with torch.no_grad():
        next(pipe.generator.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite values"):
        pipe(labels, generator=seeded(0))


def test_invalid_hd_configs_are_refused_at_load(tmp_path):
    import json

    pipe = camvid_like_pipe()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    for change, message in (({"image_size": [8192, 8192]}, "over the largest supported working size"),
                            ({"image_size": [50, 64]}, "divisible by the generator's downsampling factor = 4"),
                            ({"palette": [[0, 0, 0]] * 11 + [[0, 0, 300]]}, "three integers in \\[0, 255\\]"),
                            ({"countable_classes": [2, 12]}, "must be class ids in \\[0, 12\\)"),
                            ({"id2label": {"0": "sky"}}, r"no name for class id\(s\) \[1, 2")):
        (tmp_path / "model_index.json").write_text(json.dumps({**index, **change}))
        with pytest.raises(ValueError, match=message):
            Pix2PixHDPipeline.from_pretrained(tmp_path)


def test_styles_for_classes_or_instances_the_map_lacks_are_errors_not_ignored():
    pipe = camvid_like_pipe()
    labels = np.full((48, 64), 3)
    labels[:10] = 0
    labels[20:30, 10:30] = 8
    with pytest.raises(ValueError, match="class id\\(s\\) \\[26, 7\\] have no instance in this label map; its classes "
                                         "are 0 \\(Sky\\), 3 \\(Road\\), 8 \\(Car\\)"):
        pipe(labels, styles={26: 3, 7: 0, 3: 1})
    with pytest.raises(ValueError, match="instance id\\(s\\) \\[26001\\] are not in these maps; their instances are "
                                         "0, 3, 8000"):
        pipe(labels, instance_styles={26001: 5})
    # present ids work
    styled = pipe(labels, styles={3: 1, 7: "random"}, instance_styles={8000: 2}, generator=seeded(0)).images[0]
    assert not np.array_equal(np.asarray(styled), np.asarray(pipe(labels, generator=seeded(0)).images[0]))


def test_seed_is_a_deprecated_shorthand_for_a_generator():
    pipe = hd_pipe()
    labels, inst = scene()
    with pytest.warns(FutureWarning, match="seed= is deprecated") as caught:
        a = np.asarray(pipe(labels, inst, seed=4).images[0])
    assert caught[0].filename == __file__  # the caller's line
    assert np.array_equal(a, np.asarray(pipe(labels, inst, generator=torch.Generator().manual_seed(4)).images[0]))
    for seed in (-1, 2**64):
        with pytest.warns(FutureWarning), pytest.raises(ValueError, match="seed must be an integer"):
            pipe(labels, seed=seed)


@pytest.mark.parametrize("upsampling", ["nearest", "transposed"])
def test_nearest_upsampling_leaves_no_checkerboard(upsampling):
    """A constant label map gives a constant image away from the borders with resize-convolution;
    the reference's stride-2 transposed conv gives its odd and even pixels different tap counts."""
    torch.manual_seed(0)
    g1 = GlobalGenerator(3, 3, ngf=4, n_downsampling=2, n_blocks=1, norm="none", upsampling=upsampling)
    g2 = LocalEnhancer.from_global(g1, n_blocks_local=1)
    assert g2.config.upsampling == upsampling
    x = torch.ones(1, 3, 128, 128, dtype=torch.float64)
    for g in (g1, g2):
        for m in g.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.reset_parameters()  # PyTorch's default init: biases too, so no layer is dead
        with torch.no_grad():
            centre = g.double()(x)[..., 48:80, 48:80]
        spread = (centre - centre.mean((-2, -1), keepdim=True)).abs().amax() / centre.abs().mean()
        assert (spread < 1e-9) == (upsampling == "nearest"), spread


def test_a_local_enhancer_takes_g1_only_with_its_upsampling():
    g1 = GlobalGenerator(3, 3, ngf=4, n_downsampling=2, n_blocks=1, upsampling="nearest")
    with pytest.raises(ValueError, match="upsamples with 'nearest'"):
        LocalEnhancer(3, 3, ngf=2, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1).load_global(g1)
    with pytest.raises(ValueError, match="upsampling must be one of"):
        GlobalGenerator(3, 3, upsampling="bilinear")
