"""learnkit.vision: images from folders, CSVs or file lists to a trained classifier.

Where each concern lives: decoding, the ImageBlock and labellers in `image.py`; per-item transforms in
`transforms.py`; device batch augmentation (one grid_sample per batch) in `augment.py`; ImageDataBunch and
the GPU-resident path in `data.py`; bodies, heads and pretrained weights in `models.py` (and
`timm_models.py` for timm, `efficientnet.py`, `nets.py`), the U-Net in `unet.py`; `vision_learner` and
`unet_learner` in `learner.py`; segmentation losses in `losses.py`; interpretation and TTA in `interpret.py`;
MixUp, CutMix and label smoothing in `regularize.py`; masks (`MaskBlock`, `SegmentationDataBunch`) in `segment.py`, keypoints (`PointBlock`,
`PointsDataBunch`) in `points.py`, what they share (image sizes, following item transforms, drawing over an
image) in `targets.py`.
"""
from learnkit.vision.augment import BatchAugment, BatchResize, Warp, aug_transforms
from learnkit.vision.data import IMAGENET_STATS, ImageDataBunch
from learnkit.vision.efficientnet import EfficientNetLite0, load_efficientnet_lite0_weights
from learnkit.vision.image import (ImageBlock, ImageLoadError, RegexLabeller, decode_images, get_image_files,
                                   load_image, parent_label, verify_images)
from learnkit.vision.interpret import ClassificationInterpretation, SegmentationInterpretation, show_results, tta
from learnkit.vision.learner import ChannelsLast, unet_learner, vision_learner
from learnkit.vision.losses import CrossEntropyDiceLoss, DiceLoss, SegmentationCrossEntropy
from learnkit.vision.models import (PretrainedWeightsNotFound, RegressionOutput, VisionModel, create_vision_model,
                                    load_pretrained, pretrained_stats, vision_splitter)
from learnkit.vision.show_targets import show_mask_overlay, show_points_overlay
from learnkit.vision.unet import DynamicUnet, PixelShuffleICNR, unet_model, unet_splitter
from learnkit.vision.nets import ResNet9
from learnkit.vision.points import PointBlock, PointsDataBunch
from learnkit.vision.regularize import CutMix, LabelSmoothingCrossEntropy, MixUp
from learnkit.vision.segment import MaskBlock, SegmentationDataBunch, read_codes
from learnkit.vision.targets import code_colors, image_size, mask_legend, show_mask, show_points
from learnkit.vision.transforms import RandomResizedCrop, Resize

__all__ = [
    "BatchAugment", "BatchResize", "ChannelsLast", "ClassificationInterpretation", "CutMix", "EfficientNetLite0",
    "IMAGENET_STATS", "ImageBlock", "ImageDataBunch", "ImageLoadError", "LabelSmoothingCrossEntropy", "MixUp",
    "PretrainedWeightsNotFound", "RandomResizedCrop", "RegexLabeller", "Resize", "ResNet9", "VisionModel",
    "aug_transforms", "create_vision_model", "decode_images", "get_image_files", "load_efficientnet_lite0_weights",
    "load_image", "load_pretrained", "parent_label", "pretrained_stats", "show_results", "tta", "verify_images",
    "vision_learner", "vision_splitter",
    "MaskBlock", "PointBlock", "PointsDataBunch", "SegmentationDataBunch", "Warp", "code_colors", "image_size",
    "mask_legend", "read_codes", "show_mask", "show_points",
    "CrossEntropyDiceLoss", "DiceLoss", "DynamicUnet", "PixelShuffleICNR", "RegressionOutput", "SegmentationCrossEntropy",
    "SegmentationInterpretation", "show_mask_overlay", "show_points_overlay", "unet_learner", "unet_model", "unet_splitter",
]
