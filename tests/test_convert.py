import json

import numpy as np
import pytest
import torch

from p2p_models import PatchDiscriminator, Pix2PixPipeline
from p2p_models.convert import (
    load_reference_discriminator,
    load_reference_generator,
    main,
    unet_key_map,
)

from reference_layout import RefNLayerD, RefPixelD, RefUnet, randomize


def save_reference(model, path, prefix=""):
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return path


@pytest.mark.parametrize("num_downs, ngf, norm, size", [
    (8, 8, "batch", 256), (7, 8, "batch", 128), (6, 4, "instance", 64), (5, 4, "none", 64),
])
def test_generator_conversion_reproduces_the_reference(tmp_path, num_downs, ngf, norm, size):
    ref = randomize(RefUnet(3, 2, num_downs, ngf, norm)).eval()
    model = load_reference_generator(save_reference(ref, tmp_path / "latest_net_G.pth"))
    c = model.config
    assert (c.in_channels, c.out_channels, c.num_downs, c.ngf, c.norm) == (3, 2, num_downs, ngf, norm)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    # every reference tensor lands, unchanged, at its mapped place
    ours = model.state_dict()
    mapping = {v: k for k, v in unet_key_map(num_downs).items()}
    for key, value in ref.state_dict().items():
        layer, _, leaf = key.rpartition(".")
        assert torch.equal(ours[f"{mapping[layer]}.{leaf}"], value), key


def test_generator_in_train_mode_matches_too(tmp_path):
    """The paper's sampling (dropout + batch statistics) sees the same weights in the same places."""
    ref = randomize(RefUnet(3, 3, 6, 4, "batch"))
    model = load_reference_generator(save_reference(ref, tmp_path / "g.pth"))
    x = torch.randn(1, 3, 64, 64)
    outputs = []
    for net in (ref.train(), model.train()):
        torch.manual_seed(3)
        with torch.no_grad():
            outputs.append(net(x))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_legacy_variants_load(tmp_path):
    ref = randomize(RefUnet(3, 3, 6, 4, "batch")).eval()
    state = {"module." + k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = load_reference_generator(tmp_path / "old.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_layers, norm", [(1, "batch"), (3, "batch"), (5, "instance"), (3, "none")])
def test_discriminator_conversion(tmp_path, n_layers, norm):
    ref = randomize(RefNLayerD(6, 8, n_layers, norm)).eval()
    model = load_reference_discriminator(save_reference(ref, tmp_path / "latest_net_D.pth"))
    assert (model.config.n_layers, model.config.ndf, model.config.norm) == (n_layers, 8, norm)
    x = torch.randn(2, 6, 300, 300)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_pixel_discriminator_conversion(tmp_path):
    ref = randomize(RefPixelD(4, 8, "batch")).eval()
    model = load_reference_discriminator(save_reference(ref, tmp_path / "d.pth"))
    assert model.config.pixel and model.config.in_channels == 4
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_cli_writes_a_loadable_pipeline(tmp_path):
    ref_g = randomize(RefUnet(3, 3, 6, 4, "batch")).eval()
    ref_d = randomize(RefNLayerD(6, 4, 3, "batch")).eval()
    g_path = save_reference(ref_g, tmp_path / "latest_net_G.pth")
    d_path = save_reference(ref_d, tmp_path / "latest_net_D.pth")
    out = tmp_path / "pipe"
    main(["--checkpoint", str(g_path), "--discriminator", str(d_path), "--output_dir", str(out),
          "--image_size", "64", "--direction", "BtoA"])
    assert json.loads((out / "model_index.json").read_text())["direction"] == "BtoA"
    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.generator.config.use_dropout
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    image = pipe.postprocess(x)[0]
    with torch.no_grad():
        expected = pipe.postprocess(ref_g(pipe.preprocess([image])))[0]
    assert np.array_equal(np.asarray(pipe(image, deterministic=True)), np.asarray(expected))
    loaded_d = PatchDiscriminator.from_pretrained(out / "discriminator")
    y = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded_d(y), ref_d(y), rtol=1e-5, atol=1e-5)


def test_wrong_files_are_named(tmp_path):
    d_path = save_reference(randomize(RefNLayerD(6, 8, 3, "batch")), tmp_path / "latest_net_D.pth")
    with pytest.raises(ValueError, match="not a reference UnetGenerator state dict"):
        load_reference_generator(d_path)
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: could not be read .* weights_only=True"):
        load_reference_generator(tmp_path / "junk.pth")
    state = RefUnet(3, 3, 6, 4, "batch").state_dict()
    state["model.model.1.model.1.weight"] = torch.zeros(8, 4, 3, 3)
    with pytest.raises(ValueError, match="model.model.1.model.1.weight has shape \\(8, 4, 3, 3\\), expected"):
        load_reference_generator(state)
    state = RefUnet(3, 3, 6, 4, "batch").state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys \\['extra.weight'\\]"):
        load_reference_generator(state)


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model.model.0.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_reference_generator(tmp_path / "evil.pth")
