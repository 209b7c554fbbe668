import datasets
import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from train.data import BadImageError, PairedImageDataset, load_splits, train_val_split
from train.metrics import psnr, ssim

FACADES = ROOT / "tests" / "fixtures" / "facades"


def rgb(seed, size=(40, 30)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_aligned_folder_halves_and_direction():
    train = load_splits(str(FACADES))["train"]
    assert len(train) == 10
    ab = train.cast_column("image", datasets.Image(decode=False))
    first = Image.open(ab[0]["image"]["path"]).convert("RGB")
    kw = dict(layout="aligned", load_size=64, crop_size=64, train=False)
    a2b, b2a = PairedImageDataset(train, direction="AtoB", **kw), PairedImageDataset(train, direction="BtoA", **kw)
    left = np.asarray(first.crop((0, 0, 80, 80)).resize((64, 64), Image.BICUBIC), np.float32) / 255 * 2 - 1
    assert np.allclose(a2b[0]["A"].numpy().transpose(1, 2, 0), left, atol=1e-6)  # photo (left half) is A
    assert torch.equal(a2b[0]["A"], b2a[0]["B"]) and torch.equal(a2b[0]["B"], b2a[0]["A"])


def test_augmentation_is_shared_by_a_and_b_and_seeded(tmp_path):
    twins = [Image.fromarray(np.hstack([np.asarray(rgb(i))] * 2)) for i in range(4)]
    ds = datasets.Dataset.from_dict({"image": twins}).cast_column("image", datasets.Image())
    data = PairedImageDataset(ds, load_size=40, crop_size=32, seed=3)
    items = [data[i] for i in range(4)]
    assert all(torch.equal(it["A"], it["B"]) for it in items)  # identical halves stay identical: same crop/flip
    assert all(it["A"].shape == (3, 32, 32) for it in items)
    again = PairedImageDataset(ds, load_size=40, crop_size=32, seed=3)
    assert all(torch.equal(again[i]["A"], items[i]["A"]) for i in range(4))
    data.set_epoch(1)
    assert any(not torch.equal(data[i]["A"], items[i]["A"]) for i in range(4))  # new epoch, new crops


def test_paired_columns_from_save_to_disk_and_parquet(tmp_path):
    ds = datasets.Dataset.from_dict({"label": [rgb(0), rgb(1)], "photo": [rgb(2), rgb(3)], "n": [0, 1]})
    ds = ds.cast_column("label", datasets.Image()).cast_column("photo", datasets.Image())
    ds.save_to_disk(str(tmp_path / "disk"))
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "data.parquet"))
    for source in (tmp_path / "disk", tmp_path / "pq", tmp_path / "pq" / "data.parquet"):
        train = load_splits(str(source))["train"]
        data = PairedImageDataset(train, layout="paired", image_column_a="label", image_column_b="photo",
                                  load_size=32, crop_size=32, train=False)
        expected = np.asarray(rgb(2).resize((32, 32), Image.BICUBIC), np.float32) / 255 * 2 - 1
        assert np.allclose(data[0]["B"].numpy().transpose(1, 2, 0), expected, atol=1e-6), source
    with pytest.raises(ValueError, match="image column 'mask' not found; the dataset's image columns are"):
        PairedImageDataset(ds, layout="paired", image_column_a="label", image_column_b="mask")
    with pytest.raises(ValueError, match="choose one with --image_column"):
        PairedImageDataset(ds, layout="aligned")


def test_size_mismatch_and_odd_width_are_named(tmp_path):
    ds = datasets.Dataset.from_dict({"a": [rgb(0, (40, 30))], "b": [rgb(1, (41, 30))]})
    ds = ds.cast_column("a", datasets.Image()).cast_column("b", datasets.Image())
    data = PairedImageDataset(ds, layout="paired", image_column_a="a", image_column_b="b", load_size=32, crop_size=32)
    with pytest.raises(BadImageError, match=r"A and B differ in size: .*\(40, 30\).*\(41, 30\)"):
        data[0]
    rgb(0, (41, 20)).save(tmp_path / "odd.png")
    odd = load_splits(str(tmp_path))["train"]
    with pytest.raises(BadImageError, match="odd.png: width 41 is odd"):
        PairedImageDataset(odd, load_size=32, crop_size=32)[0]


def test_corrupt_images_are_named_or_skipped(tmp_path):
    folder = tmp_path / "facades" / "train"
    folder.mkdir(parents=True)
    for p in sorted((FACADES / "train").glob("*.jpg"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes((FACADES / "train" / "1.jpg").read_bytes()[:300])
    train = load_splits(str(tmp_path / "facades"))["train"]
    data = PairedImageDataset(train, load_size=32, crop_size=32)
    bad = [i for i in range(len(data)) if "broken" in (data.dataset[i]["image"]["path"] or "")]
    with pytest.raises(BadImageError, match="broken.jpg: cannot be read as an image"):
        data[bad[0]]
    errors = data.check_all()
    assert len(errors) == 1 and "broken.jpg" in errors[0] and len(data) == 3
    assert all(data[i]["A"].shape == (3, 32, 32) for i in range(3))


def test_colorization_pairs_are_l_and_ab():
    ds = datasets.Dataset.from_dict({"image": [rgb(5)]}).cast_column("image", datasets.Image())
    data = PairedImageDataset(ds, layout="colorization", load_size=32, crop_size=32, train=False)
    item = data[0]
    assert item["A"].shape == (1, 32, 32) and item["B"].shape == (2, 32, 32)
    assert item["A"].min() >= -1 and item["A"].max() <= 1 and item["B"].abs().max() <= 1
    back = data.to_rgb(item["A"][None], item["B"][None])
    original = torch.from_numpy(np.asarray(rgb(5).resize((32, 32), Image.BICUBIC), np.float32).transpose(2, 0, 1)) / 255
    assert (back[0] - original).abs().max() < 1e-3  # Lab round trip
    assert data.channels == (1, 2)


def test_validation_split_is_the_datasets_or_a_seeded_holdout():
    ds = datasets.Dataset.from_dict({"x": list(range(20))})
    train, val, desc = train_val_split(datasets.DatasetDict(train=ds), "train", None, 0.1, seed=0)
    assert len(train) == 18 and len(val) == 2 and "held out" in desc
    assert not set(train["x"]) & set(val["x"])
    assert train_val_split(datasets.DatasetDict(train=ds), "train", None, 0.1, seed=0)[1]["x"] == val["x"]
    both = datasets.DatasetDict(train=ds, validation=ds.select(range(3)))
    assert len(train_val_split(both, "train", None, 0.1, 0)[1]) == 3
    with pytest.raises(ValueError, match="split 'training' not found"):
        train_val_split(both, "training", None, 0.1, 0)


def test_metrics_sanity():
    g = torch.Generator().manual_seed(0)  # unseeded, 0.1 noise gave SSIM 0.945-0.951: a flaky threshold
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(x, noisy) < 0.9).all()
    expected = 10 * torch.log10(1 / ((x - noisy) ** 2).flatten(1).mean(1))
    assert torch.allclose(psnr(x, noisy), expected)


def test_label_image_triples_from_folders_and_columns(tmp_path):
    from train.data import LabelImageDataset, load_label_splits

    folder = ROOT / "tests" / "fixtures" / "cityscapes"
    train = load_label_splits(str(folder))["train"]
    assert len(train) == 4 and set(train.column_names) == {"label", "image", "instance"}
    data = LabelImageDataset(train, load_size=128, train=False, size_factor=16)
    item = data[0]
    assert item["label"].shape == (1, 64, 128) and item["image"].shape == (3, 64, 128)
    assert item["instance"].max() > 1000  # Cityscapes instance ids (class * 1000 + k) survive resizing
    assert set(item["label"].unique().tolist()) <= set(range(35))
    cropped = LabelImageDataset(train, load_size=256, crop_size=64, seed=1, size_factor=16)
    a, b = cropped[0], cropped[0]
    assert a["image"].shape == (3, 64, 64) and torch.equal(a["label"], b["label"])
    # the same triples as a `datasets` dataset with columns
    train.save_to_disk(str(tmp_path / "disk"))
    columns = LabelImageDataset(load_label_splits(str(tmp_path / "disk"))["train"], load_size=128, train=False,
                                size_factor=16)
    assert torch.equal(columns[0]["label"], item["label"]) and torch.equal(columns[0]["image"], item["image"])
    with pytest.raises(ValueError, match="column 'inst' not found"):
        LabelImageDataset(train, instance_column="inst")


def test_multiscale_crops_keep_the_aspect_ratio():
    wide = rgb(7, size=(80, 40))
    ds = datasets.Dataset.from_dict({"image": [wide]}).cast_column("image", datasets.Image())
    fixed = PairedImageDataset(ds, layout="colorization", load_size=32, max_load_size=32, crop_size=32, flip=False)
    reference = np.asarray(wide.resize((64, 32), Image.BICUBIC), np.float32)  # short side 32, aspect kept
    for epoch in range(4):
        fixed.set_epoch(epoch)
        crop = fixed.to_rgb(fixed[0]["A"][None], fixed[0]["B"][None])[0].permute(1, 2, 0).numpy() * 255
        assert any(np.abs(crop - reference[:, x:x + 32]).max() < 1.5 for x in range(33))
    scaled = PairedImageDataset(ds, layout="colorization", load_size=32, max_load_size=64, crop_size=32)
    crops = set()
    for epoch in range(6):
        scaled.set_epoch(epoch)
        crops.add(scaled[0]["A"].numpy().tobytes())
        assert scaled[0]["A"].shape == (1, 32, 32)
    assert len(crops) > 1
    with pytest.raises(ValueError, match="max_load_size"):
        PairedImageDataset(ds, layout="colorization", load_size=32, max_load_size=16, crop_size=32)


def test_label_ids_outside_label_nc_are_named_or_skipped(tmp_path):
    from train.data import LabelImageDataset, load_label_splits

    fixture = ROOT / "tests" / "fixtures" / "cityscapes"
    for kind in ("label", "img", "inst"):
        (tmp_path / f"train_{kind}").mkdir()
        for p in sorted((fixture / f"train_{kind}").iterdir())[:2]:
            (tmp_path / f"train_{kind}" / p.name).write_bytes(p.read_bytes())
    label_path = sorted((tmp_path / "train_label").iterdir())[1]
    labels = np.array(Image.open(label_path))
    labels[0, :3] = [40, 255, 41]
    Image.fromarray(labels).save(label_path)
    train = load_label_splits(str(tmp_path))["train"]
    data = LabelImageDataset(train, load_size=128, train=False, size_factor=16, label_nc=35)
    with pytest.raises(BadImageError, match=rf"{label_path.name}: label ids must lie in \[0, 35\) for --label_nc 35, "
                                            r"found 40, 41, 255$"):
        data[1]
    dontcare = LabelImageDataset(train, load_size=128, train=False, size_factor=16, label_nc=35,
                                 contain_dontcare_label=True)
    with pytest.raises(BadImageError, match=r"must lie in \[0, 35\) or be 255 \(--contain_dontcare_label\)"):
        dontcare[1]
    labels[0, :3] = 255
    Image.fromarray(labels).save(label_path)
    assert dontcare[1]["label"].shape == (1, 64, 128)  # 255 is the don't-care id
    errors = data.check_all()
    assert len(errors) == 1 and label_path.name in errors[0] and len(data) == 1 and data[0]["index"] == 0
