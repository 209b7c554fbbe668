import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import environment

from p2p_models import PatchDiscriminator, Pix2PixPipeline
from p2p_models.blocks import Dropout
from p2p_models.convert import (
    clean_stale,
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
    for parent in list(ref.modules()):  # the reference's dropouts drawing their masks as ours do
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, Dropout(child.p))
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
    image = pipe.image_processor.postprocess(x)[0]
    with torch.no_grad():
        expected = pipe.image_processor.postprocess(ref_g(pipe.image_processor.preprocess(image, 64, 64)))[0]
    assert np.array_equal(np.asarray(pipe(image, deterministic=True).images[0]), np.asarray(expected))
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


# pix2pixHD
from p2p_models import Pix2PixHDPipeline  # noqa: E402
from p2p_models.convert import (  # noqa: E402
    load_reference_clusters,
    load_reference_encoder,
    load_reference_hd_generator,
    load_reference_multiscale_discriminator,
)
from reference_layout import RefEncoder, RefGlobal, RefLocal, RefMultiscaleD  # noqa: E402


def test_hd_global_generator_conversion(tmp_path):
    ref = randomize(RefGlobal(12, 3, 8, 3, 2)).eval()
    model = load_reference_hd_generator(save_reference(ref, tmp_path / "latest_net_G.pth"))
    c = model.config
    assert type(model).__name__ == "GlobalGenerator"
    assert (c.in_channels, c.out_channels, c.ngf, c.n_downsampling, c.n_blocks) == (12, 3, 8, 3, 2)
    x = torch.randn(1, 12, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_local", [1, 2])
def test_hd_local_enhancer_conversion(tmp_path, n_local):
    ref = randomize(RefLocal(12, 3, 4, 2, 1, n_local, 2)).eval()
    model = load_reference_hd_generator(save_reference(ref, tmp_path / "latest_net_G.pth", prefix="module."))
    c = model.config
    assert type(model).__name__ == "LocalEnhancer"
    assert (c.ngf, c.n_downsample_global, c.n_blocks_global, c.n_local_enhancers, c.n_blocks_local) == \
        (4, 2, 1, n_local, 2)
    x = torch.randn(1, 12, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def test_hd_encoder_and_discriminator_conversion(tmp_path):
    ref_e = randomize(RefEncoder(3, 3, 4, 2)).eval()
    encoder = load_reference_encoder(save_reference(ref_e, tmp_path / "latest_net_E.pth"))
    image, inst = torch.randn(1, 3, 32, 32), torch.randint(0, 3, (1, 1, 32, 32))
    with torch.no_grad():
        raw = ref_e.model(image)
        torch.testing.assert_close(encoder.layers(image), raw, rtol=1e-4, atol=1e-5)
        pooled = encoder(image, inst)
        for i in range(3):  # every instance's pixels hold the instance mean of the raw features
            mask = inst[0, 0] == i
            torch.testing.assert_close(pooled[0][:, mask], raw[0][:, mask].mean(1, keepdim=True).expand(-1, int(
                mask.sum())), rtol=1e-4, atol=1e-5)
    ref_d = randomize(RefMultiscaleD(7, 8, 3, 3)).eval()
    d = load_reference_multiscale_discriminator(save_reference(ref_d, tmp_path / "latest_net_D.pth"))
    assert (d.config.num_d, d.config.n_layers, d.config.ndf) == (3, 3, 8)
    x = torch.randn(1, 7, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(d(x), ref_d(x)):
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_reference_clusters_need_an_explicit_opt_in(tmp_path):
    clusters = {26: np.arange(6, dtype=np.float32).reshape(2, 3), 7: np.ones((1, 3), np.float32)}
    np.save(tmp_path / "features_clustered_010.npy", clusters, allow_pickle=True)
    with pytest.raises(ValueError, match="pickled dict; unpickling can run code"):
        load_reference_clusters(tmp_path / "features_clustered_010.npy", 35)
    bank = load_reference_clusters(tmp_path / "features_clustered_010.npy", 35, allow_pickle=True)
    assert bank.counts[26] == 2 and bank.counts[7] == 1 and bank.counts.sum() == 3
    assert torch.equal(bank.centers[26, 1], torch.tensor([3.0, 4.0, 5.0]))


def test_hd_cli_writes_an_editable_pipeline(tmp_path):
    ref_g = randomize(RefGlobal(35 + 1 + 3, 3, 4, 2, 1)).eval()
    ref_e = randomize(RefEncoder(3, 3, 4, 2)).eval()
    save_reference(ref_g, tmp_path / "G.pth")
    save_reference(ref_e, tmp_path / "E.pth")
    np.save(tmp_path / "clusters.npy", {26: np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)},
            allow_pickle=True)
    out = tmp_path / "label2city"
    main(["--checkpoint", str(tmp_path / "G.pth"), "--encoder", str(tmp_path / "E.pth"), "--features",
          str(tmp_path / "clusters.npy"), "--allow_pickle", "--label_nc", "35", "--image_size", "32", "64",
          "--output_dir", str(out)])
    pipe = Pix2PixHDPipeline.from_pretrained(out)
    labels = np.full((32, 64), 7)
    labels[16:, 10:30] = 26
    instances = labels.copy()
    instances[16:, 10:30] = 26001
    a = np.asarray(pipe(labels, instances, styles={26: 0}).images[0])
    b = np.asarray(pipe(labels, instances, styles={26: 9}).images[0])
    assert a.shape == (32, 64, 3) and not np.array_equal(a, b)


def test_a_failed_conversion_leaves_no_partial_output(tmp_path):
    ref_g = randomize(RefUnet(3, 3, 6, 4, "batch")).eval()
    g_path = save_reference(ref_g, tmp_path / "latest_net_G.pth")
    d_path = save_reference(randomize(RefNLayerD(6, 4, 3, "batch")), tmp_path / "latest_net_D.pth")
    (tmp_path / "truncated_D.pth").write_bytes(d_path.read_bytes()[:500])
    out = tmp_path / "pipe"
    bad = ["--checkpoint", str(g_path), "--discriminator", str(tmp_path / "truncated_D.pth"), "--output_dir", str(out)]
    with pytest.raises(ValueError, match="truncated_D.pth: could not be read"):
        main(bad)
    assert not out.exists()
    main(["--checkpoint", str(g_path), "--output_dir", str(out), "--direction", "BtoA"])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="truncated_D.pth: could not be read"):
        main(bad)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    main(["--checkpoint", str(g_path), "--discriminator", str(d_path), "--output_dir", str(out)])  # replaces it
    assert json.loads((out / "model_index.json").read_text())["direction"] == "AtoB"
    PatchDiscriminator.from_pretrained(out / "discriminator")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging folders left
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no model_index.json"):
        main(["--checkpoint", str(g_path), "--output_dir", str(tmp_path / "notes")])
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_a_numeric_npy_as_clusters_is_explained(tmp_path):
    np.save(tmp_path / "features.npy", np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match=r"holds a float32 array of shape \(10, 3\); expected pix2pixHD's "
                                         r"features_clustered_\*.npy: a pickled dict \{class id: \(k, feat_num\)"):
        load_reference_clusters(tmp_path / "features.npy", 35, allow_pickle=True)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="junk.npy: could not be read as a .npy file"):
        load_reference_clusters(tmp_path / "junk.npy", 35, allow_pickle=True)
    np.save(tmp_path / "empty.npy", {}, allow_pickle=True)
    with pytest.raises(ValueError, match="holds no cluster centres"):
        load_reference_clusters(tmp_path / "empty.npy", 35, allow_pickle=True)


def test_what_a_killed_conversion_left_is_cleaned_by_the_next(tmp_path):
    """SIGKILL while the pipeline is being written leaves `.pipe.partial-<pid>-*`; the next conversion removes
    it. A previous pipeline set aside (`.old-`) by a killed run, with the folder itself missing, is put back."""
    g_path = save_reference(randomize(RefUnet(3, 3, 8, 32, "batch")).eval(), tmp_path / "latest_net_G.pth")
    out = tmp_path / "pipe"
    command = [sys.executable, "-m", "p2p_models.cli", "convert", "--checkpoint", str(g_path), "--output_dir", str(out)]
    proc = subprocess.Popen(command, env=environment(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(tmp_path.glob(".pipe.partial-*/generator")) and proc.poll() is None and time.time() < deadline:
        pass
    proc.kill()
    proc.wait()
    assert list(tmp_path.glob(".pipe.partial-*")), "the conversion finished before it could be killed"
    main(["--checkpoint", str(g_path), "--output_dir", str(out), "--image_size", "256"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    Pix2PixPipeline.from_pretrained(out)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    aside = tmp_path / f".pipe.old-{gone.stdout.strip()}-x"  # killed between setting the old folder aside and the swap
    out.rename(aside)
    clean_stale(out)
    assert not aside.exists() and Pix2PixPipeline.from_pretrained(out).config.image_size == 256
    out.rename(aside)
    main(["--checkpoint", str(g_path), "--output_dir", str(out), "--image_size", "512"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert Pix2PixPipeline.from_pretrained(out).config.image_size == 512
