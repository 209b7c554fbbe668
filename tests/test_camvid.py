"""CamVid support: the SegNet folder layout, connected-component instances, the Cityscapes -> CamVid
mapping, and pix2pixHD training on data without instance maps (real CamVid and Cityscapes fixtures)."""

import json

import numpy as np
from conftest import ROOT, seeded
from PIL import Image
from test_train_pix2pixhd import launch

from p2p_models import GlobalGenerator, Pix2PixHDPipeline, camvid
from p2p_models.labels import connected_instances
from train.data import LabelImageDataset, load_label_splits

FIXTURE = ROOT / "tests" / "fixtures" / "camvid"
CITYSCAPES = ROOT / "tests" / "fixtures" / "cityscapes"


def test_connected_instances_split_countable_classes_only():
    labels = np.array([[8, 8, 3, 8],
                       [3, 3, 3, 8],
                       [0, 0, 3, 3]])
    instances = connected_instances(labels, [8])
    assert instances[0, 0] == instances[0, 1] and instances[0, 3] == instances[1, 3]
    assert {instances[0, 0], instances[0, 3]} == {8000, 8001}  # two cars, class * 1000 + k
    assert (instances[labels == 3] == 3).all() and (instances[labels == 0] == 0).all()


def test_segnet_layout_and_instances_from_components():
    splits = load_label_splits(str(FIXTURE))
    assert set(splits) == {"train", "val"} and set(splits["train"].column_names) == {"label", "image"}
    data = LabelImageDataset(splits["train"], instance_column=None, load_size=128, train=False,
                             countable=list(camvid.COUNTABLE))
    item = data[0]
    labels, instances = item["label"][0].numpy(), item["instance"][0].numpy()
    assert labels.max() <= camvid.VOID
    countable = np.isin(labels, camvid.COUNTABLE)
    assert (instances[countable] // 1000 == labels[countable]).all()
    assert (instances[~countable] == labels[~countable]).all()


def test_cityscapes_maps_to_camvid_with_real_instances():
    label_path = sorted((CITYSCAPES / "train_label").iterdir())[0]
    inst_path = sorted((CITYSCAPES / "train_inst").iterdir())[0]
    city_labels = np.asarray(Image.open(label_path)).astype(np.int64)
    city_instances = np.asarray(Image.open(inst_path)).astype(np.int64)
    labels, instances = camvid.from_cityscapes(city_labels, city_instances)
    assert labels.min() >= 0 and labels.max() <= camvid.VOID
    assert (labels[city_labels == 7] == camvid.CLASS_NAMES.index("Road")).all()
    assert (labels[city_labels == 26] == camvid.CLASS_NAMES.index("Car")).all()
    cars = np.unique(city_instances[city_labels == 26])
    assert len(np.unique(instances[city_labels == 26])) == len(cars)  # every Cityscapes car stays one instance
    assert set(camvid.CITYSCAPES_TO_CAMVID) == set(range(34))


def test_pipeline_builds_instances_for_countable_classes():
    g = GlobalGenerator(12 + 1, 3, ngf=4, n_downsampling=2, n_blocks=1)
    pipe = Pix2PixHDPipeline(generator=g, label_nc=12, image_size=[32, 32], palette=camvid.COLORS,
                             countable_classes=[8])
    labels = np.full((32, 32), 3)
    labels[4:10, 2:8] = 8
    labels[4:10, 20:28] = 8
    _, instances = pipe.label_and_instance_ids(labels)
    assert len(np.unique(instances[labels == 8])) == 2
    plain = Pix2PixHDPipeline(generator=g, label_nc=12, image_size=[32, 32])
    assert len(np.unique(plain.label_and_instance_ids(labels)[1][labels == 8])) == 1


def test_training_on_camvid_without_instance_maps(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"names": camvid.CLASS_NAMES, "colors": camvid.COLORS}))
    out = tmp_path / "camvid"
    launch(tmp_path, ["--dataset", str(FIXTURE), "--label_nc", "12", "--countable_classes", *map(str, camvid.COUNTABLE),
                      "--label_info", str(tmp_path / "info.json"), "--load_size", "128", "--ngf", "8",
                      "--n_downsample_global", "2", "--n_blocks_global", "1", "--ndf", "8", "--num_D", "2",
                      "--nef", "4", "--n_downsample_E", "2", "--no_vgg_loss", "--instance_feat", "--n_clusters", "2",
                      "--num_epochs", "1", "--num_epochs_decay", "0", "--checkpointing_steps", "1000",
                      "--validation_steps", "1000", "--output_dir", str(out)])
    pipe = Pix2PixHDPipeline.from_pretrained(out)
    assert pipe.config.countable_classes == list(camvid.COUNTABLE)
    assert pipe.label_processor.class_names == camvid.CLASS_NAMES and pipe.working_size == (96, 128)
    label_map = Image.open(sorted((FIXTURE / "valannot").iterdir())[0])
    out_image = pipe(label_map, generator=seeded(0)).images[0]
    assert out_image.size == label_map.size
