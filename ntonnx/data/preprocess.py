"""Image preprocessing as deployments do it: decode, resize, center crop, scale, normalise, lay out.

:class:`ImagePreprocess` holds the settings a user names (options, a preset, or a small JSON
file); :meth:`ImagePreprocess.resolve` fills the rest from the model's declared input (layout,
channels, crop size, dtype) and refuses settings the model contradicts. The result,
:class:`ImagePipeline`, decodes one image with Pillow into uint8 pixels (the part worth running
in parallel: Pillow releases the GIL) and turns a stack of them into the model's tensor with
vectorised NumPy. The steps follow torchvision's ``Resize(int)`` / ``CenterCrop`` / ``ToTensor``
/ ``Normalize`` on PIL images, the usual deployment recipe:

``value = (pixel * scale - mean[channel]) / std[channel]`` with mean/std given in the order of
the channels fed to the model (RGB, or BGR for Caffe-style models).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ntonnx.data.dataset import InputSpec, dims, require_extra
from ntonnx.errors import DataError, UsageError
from ntonnx.options import numbers, option

#: Named preprocessing conventions. ``imagenet`` is torchvision's; ``imagenet-caffe`` is Keras
#: "caffe" mode (BGR, mean subtraction on 0..255); ``imagenet-tf`` is Keras "tf" mode (-1..1).
PRESETS: dict[str, dict] = {
    "imagenet": {
        "resize": 256,
        "crop": 224,
        "scale": 1 / 255,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "channel_order": "RGB",
    },
    "imagenet-caffe": {
        "resize": 256,
        "crop": 224,
        "scale": 1.0,
        "mean": (103.939, 116.779, 123.68),
        "std": (1.0, 1.0, 1.0),
        "channel_order": "BGR",
    },
    "imagenet-tf": {
        "resize": 256,
        "crop": 224,
        "scale": 1 / 127.5,
        "mean": (1.0, 1.0, 1.0),
        "std": (1.0, 1.0, 1.0),
        "channel_order": "RGB",
    },
}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class ImagePreprocess:
    """What the user says about preprocessing; None means "from the preset, else from the model".

    Attributes
    ----------
    resize : the shorter side is resized to this (aspect kept), or ``(height, width)`` exactly;
        None: no resize.
    crop : center crop ``size`` or ``(height, width)``; None: the model's declared size, if any.
    scale : pixels (0..255) are multiplied by this first (1/255 for 0..1 inputs).
    mean, std : per channel, in the order fed to the model; one value applies to all channels.
    channel_order : ``RGB`` or ``BGR``.
    layout : ``NCHW`` or ``NHWC``; None: read off the model's input shape.
    dtype : a check on the model's input dtype (e.g. ``float32``); None: the model's.
    interpolation : ``bilinear`` (torchvision's default), ``bicubic``, ``nearest`` or ``lanczos``.
    """

    resize: int | tuple[int, int] | None = field(
        default=None,
        metadata=option("Resize the shorter side to N, or to exactly H,W.", metavar="N|H,W", parse=numbers(int)),
    )
    crop: int | tuple[int, int] | None = field(
        default=None,
        metadata=option("Center crop (default: the model's image size).", metavar="N|H,W", parse=numbers(int)),
    )
    scale: float | None = field(
        default=None,
        metadata=option(
            "Multiply pixels (0..255) by X first, e.g. 1/255.", metavar="X", parse=numbers(float, single=True)
        ),
    )
    mean: tuple[float, ...] | None = field(
        default=None,
        metadata=option("Subtract per channel (model channel order).", metavar="M[,M,M]", parse=numbers(float)),
    )
    std: tuple[float, ...] | None = field(
        default=None,
        metadata=option("Divide per channel (model channel order).", metavar="S[,S,S]", parse=numbers(float)),
    )
    channel_order: str | None = field(
        default=None, metadata=option("Channel order fed to the model.", choices=("RGB", "BGR"))
    )
    layout: str | None = field(default=None, metadata=option("Image tensor layout.", choices=("NCHW", "NHWC")))
    dtype: str | None = field(default=None, metadata=option("Expected model input dtype (a check).", metavar="DTYPE"))
    interpolation: str | None = field(
        default=None, metadata=option("Resize filter.", choices=("bilinear", "bicubic", "nearest", "lanczos"))
    )

    @classmethod
    def preset(cls, name: str) -> ImagePreprocess:
        """The settings of a named convention (see :data:`PRESETS`)."""
        if name not in PRESETS:
            raise UsageError(f"--preset '{name}' is unknown (choose from {', '.join(PRESETS)})")
        return cls(**PRESETS[name])

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ImagePreprocess:
        """Settings from a JSON object with the attribute names as keys, plus an optional ``preset``."""
        path = Path(path)
        try:
            config = json.loads(path.read_text())
        except OSError as exc:
            raise UsageError(f"--preprocess file '{path}' cannot be read ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"--preprocess file '{path}' is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise UsageError(f"--preprocess file '{path}' must hold a JSON object")
        base = cls.preset(config.pop("preset")) if "preset" in config else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise UsageError(
                f"--preprocess file '{path}': unknown key '{unknown[0]}' (keys: preset, {', '.join(sorted(known))})"
            )
        return base.merged(cls(**{k: _tuple(v) for k, v in config.items()}))

    def merged(self, override: ImagePreprocess) -> ImagePreprocess:
        """These settings with every setting ``override`` gives replacing ours."""
        return replace(self, **{k: v for k, v in asdict(override).items() if v is not None})

    def resolve(self, spec: InputSpec) -> ImagePipeline:
        """The complete pipeline for model input ``spec``, or a one-line error saying what clashes."""
        where = f"model input '{spec.name}' {dims(spec)}"
        if len(spec.shape) != 4:
            raise DataError(f"{where} is not a batch of images (N, C, H, W) or (N, H, W, C); images cannot feed it")
        layout = (self.layout or _layout_of(spec) or "").upper()
        if layout not in LAYOUTS:
            raise UsageError(f"{where}: cannot tell channels-first from channels-last; pass --layout NCHW or NHWC")
        channel_axis, spatial = (1, (2, 3)) if layout == "NCHW" else (3, (1, 2))
        channels = spec.shape[channel_axis] if isinstance(spec.shape[channel_axis], int) else 3
        if channels not in (1, 3):
            raise DataError(f"{where} has {channels} channels at axis {channel_axis} ({layout}); expected 1 or 3")
        model_size = tuple(spec.shape[a] for a in spatial)
        resize = _pair_or_int(self.resize, "resize")
        crop = _pair(self.crop, "crop")
        size = crop or (resize if isinstance(resize, tuple) else None)
        if all(isinstance(d, int) for d in model_size):
            if size is not None and size != model_size:
                raise UsageError(
                    f"{where} takes {model_size[0]}x{model_size[1]} images, preprocessing gives "
                    f"{size[0]}x{size[1]}; pass --crop {_size_text(model_size)}"
                )
            crop = crop or (model_size if size is None else None)
        elif size is None:
            raise UsageError(f"{where} has free image dims; pass --crop SIZE (or --resize H,W)")
        dtype = np.dtype(spec.dtype)
        if self.dtype is not None and np.dtype(self.dtype) != dtype:
            raise UsageError(f"--dtype {self.dtype} does not match {where}, which takes {dtype}")
        scale = 1.0 if self.scale is None else float(self.scale)
        mean = _per_channel(self.mean, 0.0, channels, "mean")
        std = _per_channel(self.std, 1.0, channels, "std")
        if np.any(std == 0):
            raise UsageError("--std must not contain 0")
        if dtype.kind != "f" and (scale != 1.0 or np.any(mean != 0) or np.any(std != 1)):
            raise UsageError(f"{where} takes {dtype} pixels; scale, mean and std cannot apply (drop the preset)")
        order = (self.channel_order or "RGB").upper()
        if order not in CHANNEL_ORDERS:
            raise UsageError(f"--channel-order must be RGB or BGR, got '{self.channel_order}'")
        interpolation = (self.interpolation or "bilinear").lower()
        if interpolation not in INTERPOLATIONS:
            raise UsageError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{interpolation}'")
        return ImagePipeline(
            input_name=spec.name,
            resize=resize,
            crop=crop,
            scale=scale,
            mean=mean,
            std=std,
            bgr=order == "BGR" and channels == 3,
            layout=layout,
            channels=channels,
            dtype=dtype,
            interpolation=interpolation,
        )


@dataclass(frozen=True)
class ImagePipeline:
    """Fully resolved preprocessing for one model input; see :class:`ImagePreprocess`."""

    input_name: str
    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    scale: float
    mean: np.ndarray
    std: np.ndarray
    bgr: bool
    layout: str
    channels: int
    dtype: np.dtype
    interpolation: str

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of every decoded image: the crop, else the exact resize."""
        return self.crop if self.crop is not None else self.resize

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """uint8 pixels of shape (height, width, channels) of one image file, resized and cropped.

        Raises a :class:`DataError` naming the file when Pillow cannot read it or it is smaller
        than the crop.
        """
        Image = require_extra("PIL.Image", "images", "reading images")
        try:
            with Image.open(path) as opened:
                opened.load()
                mode = "RGB" if self.channels == 3 else "L"
                image = opened if opened.mode == mode else opened.convert(mode)
        except FileNotFoundError:
            raise DataError(f"image '{path}' does not exist") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"image '{path}' cannot be decoded: {exc}") from None
        resample = getattr(Image.Resampling, self.interpolation.upper())
        if self.resize is not None:
            image = image.resize(_resized(image.size, self.resize), resample)
        if self.crop is not None:
            image = _center_crop(image, self.crop, path)
        pixels = np.asarray(image, dtype=np.uint8)
        return pixels.reshape(*pixels.shape[:2], self.channels)

    def tensor(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The model's input from decoded uint8 pixels of shape (n, height, width, channels).

        Written into ``out`` (of the model's layout and dtype) when given, so that parts of one
        batch can be converted in parallel without a second copy of it.
        """
        if self.bgr:
            pixels = pixels[..., ::-1]
        if self.layout == "NCHW":
            pixels = pixels.transpose(0, 3, 1, 2)
        if out is None:
            out = np.empty(pixels.shape, dtype=self.dtype)
        if self.dtype.kind != "f":
            np.copyto(out, pixels, casting="unsafe")
            return out
        # float32 arithmetic, as torchvision does, whatever dtype the model then takes.
        work = out if out.dtype == np.float32 else np.empty(pixels.shape, dtype=np.float32)
        shape = (-1, 1, 1) if self.layout == "NCHW" else (-1,)
        np.multiply(pixels, np.float32(self.scale), out=work)
        work -= self.mean.astype(np.float32).reshape(shape)
        work /= self.std.astype(np.float32).reshape(shape)
        if work is not out:
            np.copyto(out, work, casting="unsafe")
        return out


def _resized(size: tuple[int, int], resize: int | tuple[int, int]) -> tuple[int, int]:
    """Pillow ``(width, height)`` after resizing: the shorter side to ``resize`` (torchvision's rule)."""
    if isinstance(resize, tuple):
        return resize[1], resize[0]
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    if short == resize:
        return size
    new_long = int(resize * long / short)
    return (resize, new_long) if width <= height else (new_long, resize)


def _center_crop(image, crop: tuple[int, int], path: str | os.PathLike):
    height, width = crop
    if image.height < height or image.width < width:
        raise DataError(
            f"image '{path}' is {image.width}x{image.height} after resizing, smaller than the {width}x{height} crop"
        )
    top = round((image.height - height) / 2.0)
    left = round((image.width - width) / 2.0)
    return image.crop((left, top, left + width, top + height))


def _size_text(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else f"{size[0]},{size[1]}"


def _layout_of(spec: InputSpec) -> str | None:
    first, last = spec.shape[1], spec.shape[3]
    if first in (1, 3) and last not in (1, 3):
        return "NCHW"
    if last in (1, 3) and first not in (1, 3):
        return "NHWC"
    return None


def _pair(value, option: str) -> tuple[int, int] | None:
    value = _pair_or_int(value, option)
    return (value, value) if isinstance(value, int) else value


def _pair_or_int(value, option: str) -> int | tuple[int, int] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, int | float) else tuple(value)
    if len(values) not in (1, 2) or any(int(v) != v or v < 1 for v in values):
        raise UsageError(f"--{option} must be a positive size or HEIGHT,WIDTH, got {value!r}")
    return int(values[0]) if len(values) == 1 else (int(values[0]), int(values[1]))


def _per_channel(value, default: float, channels: int, option: str) -> np.ndarray:
    values = np.full(channels, default) if value is None else np.atleast_1d(np.asarray(value, dtype=np.float64))
    if len(values) == 1:
        values = np.repeat(values, channels)
    if len(values) != channels:
        raise UsageError(f"--{option} has {len(values)} values, the model's images have {channels} channels")
    return values


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value
