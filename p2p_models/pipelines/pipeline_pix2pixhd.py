"""`Pix2PixHDPipeline`: pix2pixHD label map (+ instance map) -> photo, with per-instance styles."""

import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from ..labels import class_count, instance_boundaries, instance_classes, instance_means, one_hot
from ..pix2pixhd import FeatureEncoder, GlobalGenerator, LocalEnhancer
from ..style_bank import StyleBank
from ..tiling import check_size_mode, run_at_size, run_padded, tile_pair
from .image_processor import P2PImageProcessor
from .label_processor import LabelMapProcessor, class_names_of
from .model_cards import PIX2PIXHD_TAGS, config_section, pix2pixhd_card
from .pipeline_utils import (
    P2PPipeline,
    check_diffusion_arguments,
    check_finite,
    check_seed,
    check_working_size,
    prepare_generators,
)


class Pix2PixHDPipeline(P2PPipeline):
    """pix2pixHD: a semantic label map (+ instance map) -> photo, with per-instance styles.

    Components: `generator` (`GlobalGenerator` or `LocalEnhancer`), optional `encoder`
    (`FeatureEncoder`) and `style_bank` (`StyleBank`) for style control.
    Config: `label_nc` (classes), `contain_dontcare_label` (id 255 becomes class `label_nc`),
    `use_instance` (boundary map channel), `image_size` ([height, width]), `palette` (RGB per class,
    for colour-coded label maps), `id2label` ({class id: name}), `countable_classes` and `label_mappings` (see
    `LabelMapProcessor`).

    The generator's input is one-hot labels, the instance boundary map, and (with a style bank)
    a `feat_num`-channel map holding one style feature per instance.

    Label maps are read and checked by `label_processor` (a `LabelMapProcessor` built from this
    config; its limits are settable on it), images by `image_processor` (a `P2PImageProcessor`): colour maps snapped to the palette, `label_mappings`
    ({source name: [class per source id]}, e.g. Cityscapes label ids for a CamVid model) applied,
    photos, noise and maps with too many instances refused.
    """

    _optional_components = ["encoder", "style_bank"]
    model_cpu_offload_seq = "encoder->generator"
    card_tags = PIX2PIXHD_TAGS

    def __init__(
        self,
        generator: GlobalGenerator | LocalEnhancer,
        encoder: FeatureEncoder | None = None,
        style_bank: StyleBank | None = None,
        label_nc: int = 35,
        contain_dontcare_label: bool = False,
        use_instance: bool = True,
        image_size: list[int] = (512, 1024),
        palette: list[list[int]] | None = None,
        id2label: dict[str, str] | None = None,
        countable_classes: list[int] | None = None,
        label_mappings: dict[str, list[int]] | None = None,
    ):
        super().__init__()
        if label_nc < 1:
            raise ValueError(f"label_nc must be at least 1, got {label_nc}")
        classes = class_count(label_nc, contain_dontcare_label)
        feat_source = style_bank if style_bank is not None else encoder
        feat_num = feat_source.config.feat_num if feat_source is not None else 0
        expected = classes + int(use_instance) + feat_num
        if generator.config.in_channels != expected:
            raise ValueError(
                f"the generator takes {generator.config.in_channels} channels, but {classes} classes + "
                f"{int(use_instance)} boundary + {feat_num} feature channels make {expected}"
            )
        check_working_size(list(image_size), generator.downsampling_factor, "the generator's downsampling factor")
        self.image_processor = P2PImageProcessor(generator.downsampling_factor)
        self.label_processor = LabelMapProcessor(
            classes, palette, class_names_of(id2label, classes), countable_classes,
            label_nc if contain_dontcare_label else None, label_mappings)
        self.register_modules(generator=generator, encoder=encoder, style_bank=style_bank)
        self.register_to_config(label_nc=label_nc, contain_dontcare_label=contain_dontcare_label,
                                use_instance=use_instance, image_size=list(image_size), palette=palette,
                                id2label=None if id2label is None else {str(k): v for k, v in id2label.items()},
                                countable_classes=countable_classes,
                                label_mappings=label_mappings)

    @property
    def working_size(self) -> tuple[int, int]:
        return tuple(self.config.image_size)

    @property
    def num_classes(self) -> int:
        return class_count(self.config.label_nc, self.config.contain_dontcare_label)

    def label_and_instance_ids(self, label_map, instance_map=None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, instances): checked (H, W) int64 ids at the label map's own size, within
        `max_pixels`; see `LabelMapProcessor.label_and_instance_ids`."""
        return self.label_processor.label_and_instance_ids(label_map, instance_map, self.max_pixels)

    def prepare_maps(self, label_map, instance_map=None, resize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, instances): (1, 1, H, W) int64 at the working size (nearest-neighbour resized), or
        at the label map's own size if not `resize`; see `label_and_instance_ids`."""
        maps = self.label_and_instance_ids(label_map, instance_map)
        if resize:
            return tuple(self.label_processor.resize(ids, self.working_size).to(self.device) for ids in maps)
        return tuple(torch.from_numpy(ids)[None, None].to(self.device) for ids in maps)

    def style_features(self, labels, instances, styles=None, instance_styles=None, style_image=None, seed=None):
        """(1, feat_num, H, W): one feature per instance, from `instance_styles[id]`, else
        `style_image` through the encoder, else the style bank's cluster `styles[class]` (an int,
        or "random"/absent for a random cluster drawn from (`seed`, instance id)). An instance's class
        is its majority label. Cost: linear in pixels, plus a constant per instance."""
        bank = self.style_bank
        feat_num = (bank or self.encoder).config.feat_num
        ids, index = torch.unique(instances[0, 0], return_inverse=True)
        majority = instance_classes(labels[0, 0], index, len(ids)).tolist()
        encoded = None
        if style_image is not None:
            if self.encoder is None:
                raise ValueError("style_image needs the pipeline's encoder, and this pipeline has none")
            encoder = self.encoder
            x = self.image_processor.preprocess(style_image, *labels.shape[-2:], self.max_pixels)
            if len(x) != 1:
                raise ValueError(f"style_image: one photo, got {len(x)}")
            x = x.to(self.device, encoder.dtype)
            with self.generator_runner(module=encoder) as net:
                features = run_padded(net, x, encoder.downsampling_factor, encoder.min_size)
            encoded = instance_means(features.float()[0], index, len(ids))  # (instances, feat)
        seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else check_seed(seed)
        styles, instance_styles = styles or {}, instance_styles or {}
        self.check_style_ids(styles, instance_styles, majority, ids.tolist())
        vectors = torch.zeros(len(ids), feat_num, device=self.device)
        for k, (inst, cls) in enumerate(zip(ids.tolist(), majority)):
            choice = instance_styles.get(inst)
            if isinstance(choice, (list, tuple, np.ndarray, torch.Tensor)):
                vector = torch.as_tensor(choice, dtype=torch.float32, device=self.device)
                if vector.shape != (feat_num,) or not torch.isfinite(vector).all():
                    raise ValueError(f"instance_styles[{inst}]: a feature vector must be {feat_num} finite numbers, "
                                     f"got {choice!r}")
            elif encoded is not None and choice is None:
                vector = encoded[k]
            elif bank is not None:
                rng = np.random.default_rng([seed, inst])  # an instance's draw depends on nothing else
                vector = bank.style(cls, choice if choice is not None else styles.get(cls), rng)
            else:
                raise ValueError("this pipeline has no style bank: give style_image or feature vectors in instance_styles")
            if vector is not None:
                vectors[k] = vector.to(vectors)
        return vectors[index].permute(2, 0, 1)[None]

    def label_image(self, labels: np.ndarray) -> Image.Image:
        """(H, W) class ids -> an RGB image in the pipeline's palette (what the model reads)."""
        return self.label_processor.label_image(labels)

    def check_style_ids(self, styles: dict, instance_styles: dict, classes: list[int], instances: list[int]) -> None:
        """A ValueError, listing what the map holds, for a style given to a class with no instance in
        it (`styles`, "random" excepted) or to an instance id it doesn't have (`instance_styles`)."""
        names = self.label_processor.class_names or [str(c) for c in range(self.num_classes)]
        present = sorted(set(classes))
        absent = [c for c, choice in styles.items() if choice != "random" and c not in present]
        if absent:
            listed = ", ".join(f"{c} ({names[c]})" for c in present)
            raise ValueError(f"styles: class id(s) {absent} have no instance in this label map; "
                             f"its classes are {listed}")
        absent = [i for i in instance_styles if i not in set(instances)]
        if absent:
            listed = ", ".join(map(str, instances[:40]))
            listed += f", ... ({len(instances)} in all)" if len(instances) > 40 else ""
            raise ValueError(f"instance_styles: instance id(s) {absent} are not in these maps; "
                             f"their instances are {listed}")

    @torch.no_grad()
    def __call__(self, label_map, instance_map=None, styles: dict | None = None, instance_styles: dict | None = None,
                 style_image: Image.Image | None = None, generator: torch.Generator | list | None = None,
                 keep_size: bool = True, size_mode: str = "resize", tile_size: int | tuple[int, int] | None = None,
                 tile_overlap: int | None = None, output_type: str = "pil", return_dict: bool = True,
                 seed: int | list[int] | None = None, num_inference_steps: int | None = None,
                 callback_on_step_end=None) -> ImagePipelineOutput | tuple:
        """Synthesise an image per label map (one map at a time: each has its own instances).

        Args:
            label_map: class ids (L/P/I image, or (H, W) integer array or tensor) or an RGB image in
                the palette; or a batch: a list of these, or a (B, H, W) / (B, 1, H, W) integer array
                or tensor.
            instance_map: instance ids (non-negative), the label map's size (optional): one per label
                map, batched the same way.
            styles: {class id: cluster index or "random"} from the style bank (for every map).
            instance_styles: {instance id: cluster index, or a feature vector} for single instances.
            style_image: a photo (a PIL image, an array or a tensor, as `Pix2PixPipeline` takes them)
                whose encoded per-instance features set the styles.
            generator: draws the random clusters: a `torch.Generator` (shared by the maps in turn, one
                draw each) or a list of one per map; same generator state and choices, same image.
                `None`: random.
            keep_size: resize the output to the label map's size (default) instead of the working size
                (`size_mode="resize"` only).
            size_mode: `resize` (default): maps resized to the working size, the output resized back.
                `native`: at the label map's own size, reflection-padded to the generator's multiple
                and cropped back. `tiled`: at its own size, tile by tile (`tile_size`, default the
                working size, tiles overlapping by `tile_overlap`, default a quarter tile, blended
                linearly); styles are drawn once for the whole map, so tiles agree.
            output_type: `pil`, `np` (float32 (B, H, W, C) in [0, 1]) or `pt` (float32 (B, C, H, W)
                in [0, 1], on the CPU); arrays and tensors of different sizes come as a list.
            return_dict: return an `ImagePipelineOutput` (default), else the tuple `(images,)`.
            num_inference_steps, callback_on_step_end: diffusers' step arguments. There is one step:
                `num_inference_steps` is ignored with a warning, a callback is refused.
            seed: deprecated (a FutureWarning): shorthand for
                `generator=seeded_generator(seed)` (an int, or a list of one per map),
                an integer in [0, 2**64).
        """
        check_diffusion_arguments(num_inference_steps, callback_on_step_end)
        self.image_processor.check_output_type(output_type)
        check_size_mode(size_mode)
        label_maps = LabelMapProcessor.map_list(label_map, "label_map")
        instance_maps = [None] * len(label_maps) if instance_map is None else \
            LabelMapProcessor.map_list(instance_map, "instance_map")
        if len(instance_maps) != len(label_maps):
            raise ValueError(f"instance_map: got {len(instance_maps)} instance maps for {len(label_maps)} label maps "
                             "(one per label map)")
        generators = prepare_generators(generator, seed, len(label_maps))
        tile = tile_pair(tile_size, self.working_size)
        overlap = min(tile) // 4 if tile_overlap is None else tile_overlap
        out = []
        for labels_in, instances_in, g in zip(self.progress_bar(label_maps), instance_maps, generators):
            labels, instances = self.prepare_maps(labels_in, instances_in, resize=size_mode == "resize")
            # the clusters are drawn with numpy from an integer seed: one draw from the generator
            map_seed = None if g is None else int(torch.randint(0, 2**63 - 1, (1,), generator=g, device=g.device))
            y = check_finite(self._generate(labels, instances, styles, instance_styles, style_image, map_seed,
                                            size_mode, tile, overlap))
            size = labels_in.size if isinstance(labels_in, Image.Image) else labels_in.shape[::-1]
            out += list(self.image_processor.postprocess(y, output_type, [tuple(size)] if keep_size else None))
        out = self.image_processor.stack(out, output_type)
        return ImagePipelineOutput(images=out) if return_dict else (out,)

    def _generate(self, labels, instances, styles=None, instance_styles=None, style_image=None, seed=None,
                  size_mode: str = "resize", tile: tuple[int, int] | None = None, overlap: int = 0):
        """The generator on prepared maps ((1, 1, H, W) ids, see `prepare_maps`; at the working size
        for `size_mode="resize"`, any size for `native` and `tiled`): one-hot labels, boundary map
        and style features in -> (1, 3, H, W) in [-1, 1]."""
        parts = [one_hot(labels, self.num_classes)]
        if self.config.use_instance:
            parts.append(instance_boundaries(instances))
        if self.style_bank is not None or self.encoder is not None:
            parts.append(self.style_features(labels, instances, styles, instance_styles, style_image, seed))
        factor, minimum = self.generator.downsampling_factor, self.generator.min_size
        with self.generator_runner() as net:
            return run_at_size(net, torch.cat(parts, 1).to(self.generator.dtype), size_mode, factor,
                               tile or self.working_size, overlap, minimum)

    def new_model_card(self, repo_id: str) -> str:
        """A Hub model card (README.md) describing this pipeline and its config."""
        h, w = self.working_size
        return str(pix2pixhd_card(repo_id, f"{w}x{h}", type(self.generator).__name__, self.num_classes,
                                  self.style_bank is not None, config_section(*self.config_for_card())))
