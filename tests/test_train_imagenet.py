"""The ImageNet-feature and augmentation options of both training scripts (--lambda_perceptual,
--diffaugment, --discriminator projected|both, --pretrained_encoder) through real `accelerate
launch` runs on the fixtures, and a cut run with them on that resumes exactly."""

import json

import pytest
import torch
from conftest import ROOT, seeded
from PIL import Image
from safetensors.torch import load_file
from test_train_pix2pix import SMALL, generator_weights, launch
from test_train_pix2pixhd import TINY as HD_TINY
from test_train_pix2pixhd import launch as launch_hd

from p2p_models import Pix2PixHDPipeline, Pix2PixPipeline
from p2p_models.projected import ProjectedDiscriminator
from train.train_pix2pix import parse_args

ALL = ["--discriminator", "both", "--diffaugment", "color,translation,cutout", "--lambda_perceptual", "1"]


def projected_weights(output_dir):
    return load_file(output_dir / "projected_discriminator" / "diffusion_pytorch_model.safetensors")


def test_pix2pix_with_every_option_saves_both_discriminators_and_resumes_exactly(tmp_path):
    args = [*SMALL, *ALL, "--pretrained_encoder", "--num_epochs", "1", "--num_epochs_decay", "1",
            "--max_train_steps", "6", "--checkpointing_steps", "3", "--seed", "5"]
    launch(tmp_path, [*args, "--output_dir", str(tmp_path / "full")])
    parts = tmp_path / "parts"
    launch(tmp_path, [*args, "--output_dir", str(parts), "--max_train_steps", "3"])
    augment_state = torch.load(parts / "checkpoint-3" / "custom_checkpoint_0.pkl", weights_only=True)
    assert set(augment_state) == {"generator"}  # DiffAugment's draws are part of the checkpoint
    launch(tmp_path, [*args, "--output_dir", str(parts), "--resume_from_checkpoint", "latest"])
    for weights in (generator_weights, projected_weights):
        full, resumed = weights(tmp_path / "full"), weights(parts)
        assert all(torch.equal(full[k], resumed[k]) for k in full), "resumed run differs from the uninterrupted one"

    out = tmp_path / "full"
    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.generator.config.encoder == "efficientnet-lite0"
    label = Image.open(ROOT / "tests" / "fixtures" / "facades" / "train" / "1.jpg").crop((80, 0, 160, 80))
    assert pipe(label, generator=seeded(0)).images[0].size == (80, 80)
    projected = ProjectedDiscriminator.from_pretrained(out / "projected_discriminator")
    assert len(projected(torch.zeros(1, 6, 64, 64))) == 4
    assert (out / "discriminator" / "config.json").is_file()
    card = (out / "README.md").read_text()
    assert ("- Options: discriminator: both; 1 * EfficientNet-Lite0 perceptual loss; DiffAugment "
            "color,translation,cutout; generator encoder initialised from ImageNet EfficientNet-Lite0.") in card
    assert "`ProjectedDiscriminator`" in card and "`PatchDiscriminator`" in card


def test_colorization_with_the_projected_discriminator_alone(tmp_path):
    out = tmp_path / "color"
    launch(tmp_path, ["--dataset", str(ROOT / "tests" / "fixtures" / "facades"), "--colorization", "--load_size",
                      "72", "--crop_size", "64", "--num_downs", "6", "--ngf", "8", "--ndf", "8", "--max_train_steps",
                      "3", "--checkpointing_steps", "1000", "--validation_steps", "1000", "--pretrained_encoder",
                      "--discriminator", "projected", "--lambda_perceptual", "1", "--diffaugment", "translation",
                      "--output_dir", str(out)])
    assert not (out / "discriminator").exists()
    assert all(torch.isfinite(w).all() for w in generator_weights(out).values()), "training diverged to NaN"
    projected = ProjectedDiscriminator.from_pretrained(out / "projected_discriminator")
    assert (projected.config.in_channels, projected.config.image_channels) == (3, 2)
    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.config.color_space == "lab" and pipe.generator.config.in_channels == 1
    assert json.loads((out / "validation_metrics.json").read_text())["num_samples"] == 1


def test_pix2pixhd_with_the_perceptual_loss_standing_in_for_vgg(tmp_path):
    out = tmp_path / "hd"
    launch_hd(tmp_path, [*HD_TINY, *ALL, "--output_dir", str(out)])
    card = (out / "README.md").read_text()
    assert "no VGG loss" in card and "1 * EfficientNet-Lite0 perceptual loss" in card
    assert "`MultiscaleDiscriminator`" in card and "`ProjectedDiscriminator`" in card
    assert ProjectedDiscriminator.from_pretrained(out / "projected_discriminator").config.in_channels == 35 + 1 + 3
    Pix2PixHDPipeline.from_pretrained(out)


def test_bad_option_values_fail_clearly(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "x", "--output_dir", "y", "--diffaugment", "color,flip"])
    assert "--diffaugment: unknown ['flip']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "x", "--output_dir", "y", "--no_gan", "--discriminator", "projected"])
    assert "which --no_gan leaves out" in capsys.readouterr().err
    args = parse_args(["--dataset", "x", "--output_dir", "y", "--diffaugment", "cutout,color"])
    assert args.diffaugment == ["cutout", "color"] and args.discriminator == "patch" and args.lambda_perceptual == 0
