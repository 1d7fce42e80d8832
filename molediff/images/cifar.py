"""CIFAR-10 readers: the official python "batches" distribution and the packed-JPEG file.

Both give an :class:`ImageSet` of uint8 images ``[N, 3, 32, 32]`` (channels first, as the network takes them)
with labels ``[N]`` and the class names.

* The official distribution (``cifar-10-python.tar.gz`` from the CIFAR-10 page, or the ``cifar-10-batches-py``
  folder it unpacks to): pickled dicts ``data_batch_1`` … ``data_batch_5`` (train) and ``test_batch`` (test),
  each with ``data`` uint8 ``[10000, 3072]`` (R, G, B planes of 32 × 32, row-major) and ``labels``, plus
  ``batches.meta`` with ``label_names``. The pickles are read with an unpickler that only rebuilds numpy
  arrays, so a crafted file cannot run code.
* The packed file (``.npz``): ``{split}_jpeg`` (uint8, every JPEG file concatenated), ``{split}_offsets``
  (int64, N + 1 byte offsets), ``{split}_labels`` (uint8) and ``classes``. Its JPEGs are decoded once with
  Pillow into a uint8 cache under ``molediff.utils.cache_dir()/cifar10``, keyed by the file's path, size and
  modification time.

Every unreadable, truncated or inconsistent file raises a one-line ValueError naming the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ImageSet", "load_cifar10", "read_cifar_batches", "read_cifar_jpeg", "hflip", "SPLITS"]

SPLITS = ("train", "test")
BATCH_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CACHE_VERSION = 1


@dataclass
class ImageSet:
    """Images ``[N, C, H, W]`` uint8, labels ``[N]`` int64 (indices into ``classes``), and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.source)


def hflip(images: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Mirror left–right the images ``[B, C, H, W]`` where ``which [B]`` is True (a copy; the input is kept)."""
    out = np.array(images, copy=True)
    out[which] = out[which][..., ::-1]
    return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; use train or test")


def load_cifar10(path: str | os.PathLike, split: str = "train", cache: bool = True) -> ImageSet:
    """CIFAR-10 ``split`` (train: 50,000 images, test: 10,000) from ``path``, whichever format it is in.

    ``path`` is ``cifar-10-python.tar.gz`` (any tar), the ``cifar-10-batches-py`` folder or a folder holding
    it, or a packed-JPEG ``.npz``. FileNotFoundError when ``path`` does not exist; ValueError for a file that
    is neither format, or bad, truncated or corrupt.
    """
    _check_split(split)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CIFAR-10 data {p} does not exist")
    if p.is_file() and p.suffix == ".npz":
        return read_cifar_jpeg(p, split, cache)
    return read_cifar_batches(p, split)


# ------------------------------------------------------------------------------ official python batches
class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings and numpy arrays only: anything else in the pickle is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never does")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        # Python 2 pickles (the official files): latin1 maps their byte strings 1:1, as numpy asks.
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # pickle raises many types for damaged input
        raise ValueError(f"{where} is truncated or not a CIFAR-10 batch ({type(e).__name__}: "
                         f"{' '.join(str(e).split()) or 'no detail'})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not a CIFAR-10 batch (it holds a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(d: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d or "labels" not in d:
        extra = " (CIFAR-100 has 'fine_labels'; this reader is for CIFAR-10)" if "fine_labels" in d else ""
        raise ValueError(f"{where} lacks the 'data' and 'labels' entries of a CIFAR-10 batch{extra}")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{where}: 'data' must be uint8 [N, 3072], got {getattr(data, 'dtype', type(data))} "
                         f"{shape}")
    try:
        labels = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'labels' is not a list of integers") from None
    if len(labels) != len(data):
        raise ValueError(f"{where}: {len(data)} images but {len(labels)} labels (truncated?)")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{where}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _batch_folder(p: Path) -> Path:
    if (p / "cifar-10-batches-py").is_dir():
        return p / "cifar-10-batches-py"
    return p


def read_cifar_batches(path: str | os.PathLike, split: str = "train") -> ImageSet:
    """The official python batches of ``split``, from the ``.tar.gz`` archive or its unpacked folder."""
    _check_split(split)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CIFAR-10 data {p} does not exist")
    wanted = BATCH_FILES[split]
    raw: dict[str, tuple[bytes, str]] = {}
    if p.is_dir():
        folder = _batch_folder(p)
        for name in [*wanted, "batches.meta"]:
            f = folder / name
            if f.is_file():
                raw[name] = (f.read_bytes(), str(f))
        if not any(n in raw for n in wanted):
            raise ValueError(f"{p} holds no CIFAR-10 python batches ({', '.join(wanted)}); give the "
                             f"cifar-10-batches-py folder, cifar-10-python.tar.gz or the packed .npz")
    else:
        try:
            with tarfile.open(p, "r:*") as tar:
                for member in tar:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in (*wanted, "batches.meta"):
                        f = tar.extractfile(member)
                        raw[name] = (f.read(), f"{p}:{member.name}")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{p} is not a readable CIFAR-10 archive (tar.gz) or is truncated "
                             f"({type(e).__name__}: {' '.join(str(e).split()) or 'no detail'})") from None
    missing = [n for n in wanted if n not in raw]
    if missing:
        raise ValueError(f"{p} is incomplete: {', '.join(missing)} missing for the {split} split")
    images, labels = [], []
    for name in wanted:
        data, lab = _batch_arrays(_unpickle(*raw[name]), raw[name][1])
        images.append(data)
        labels.append(lab)
    classes = CIFAR10_CLASSES
    if "batches.meta" in raw:
        meta = _unpickle(*raw["batches.meta"])
        names = meta.get("label_names")
        if isinstance(names, list) and len(names) == 10:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return ImageSet(np.concatenate(images), np.concatenate(labels), classes, str(p))


# ------------------------------------------------------------------------------------ packed JPEG file
def _cache_file(p: Path, split: str) -> Path:
    from ..utils import cache_dir

    st = p.stat()
    key = hashlib.sha1(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "cifar10" / f"{p.stem}_{split}_v{_CACHE_VERSION}_{key}.npz"


def _read_packed(p: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    keys = (f"{split}_jpeg", f"{split}_offsets", f"{split}_labels", "classes")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            arrays = None if missing else [z[k] for k in keys]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as e:
        raise ValueError(f"{p} is truncated or not a packed CIFAR-10 JPEG file ({type(e).__name__}: "
                         f"{' '.join(str(e).split()) or 'no detail'})") from None
    if missing:
        raise ValueError(f"{p} is not a packed CIFAR-10 JPEG file: it lacks {', '.join(missing)}")
    jpeg, offsets, labels, classes = arrays
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
        raise ValueError(f"{p}: {split}_jpeg must be a 1-D uint8 array, got {jpeg.dtype} {jpeg.shape}")
    if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or len(offsets) < 1:
        raise ValueError(f"{p}: {split}_offsets must be a 1-D integer array of N + 1 byte offsets")
    n = len(offsets) - 1
    if offsets[0] != 0 or offsets[-1] != len(jpeg) or (np.diff(offsets) <= 0).any():
        raise ValueError(f"{p}: {split}_offsets must rise from 0 to the {len(jpeg)} bytes of {split}_jpeg "
                         f"(got {offsets[0]}..{offsets[-1]}); the file is truncated or inconsistent")
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{p}: {n} images but {len(labels)} {split}_labels")
    classes = tuple(str(c) for c in np.asarray(classes).reshape(-1))
    if n and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise ValueError(f"{p}: {split}_labels must index the {len(classes)} classes")
    return jpeg, offsets.astype(np.int64), labels.astype(np.int64), classes


def _decode(p: Path, split: str, jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    from ..utils import progress

    n = len(offsets) - 1
    out = None
    for i in progress(range(n), desc=f"decoding {split} JPEGs", unit="img"):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes())) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # Pillow raises several types for damaged images
            raise ValueError(f"{p}: {split} image {i} is not a readable JPEG ({type(e).__name__}: "
                             f"{' '.join(str(e).split()) or 'no detail'})") from None
        if out is None:
            out = np.empty((n, 3, *arr.shape[:2]), dtype=np.uint8)
        if arr.shape[:2] != out.shape[2:]:
            raise ValueError(f"{p}: {split} image {i} is {arr.shape[1]}x{arr.shape[0]} pixels, image 0 is "
                             f"{out.shape[3]}x{out.shape[2]}")
        out[i] = arr.transpose(2, 0, 1)
    return out if out is not None else np.empty((0, 3, 32, 32), dtype=np.uint8)


def read_cifar_jpeg(path: str | os.PathLike, split: str = "train", cache: bool = True) -> ImageSet:
    """``split`` of a packed-JPEG ``.npz`` (format in the module docstring), decoded once into the cache."""
    _check_split(split)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"packed CIFAR-10 file {p} does not exist")
    cached = _cache_file(p, split) if cache else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return ImageSet(z["images"], z["labels"].astype(np.int64), tuple(str(c) for c in z["classes"]),
                                str(p))
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring the damaged cache %s (%s): decoding again", cached, e)
    jpeg, offsets, labels, classes = _read_packed(p, split)
    log.info("decoding %d %s JPEGs of %s%s", len(labels), split, p, f" into the cache {cached}" if cached else "")
    images = _decode(p, split, jpeg, offsets)
    if cached is not None:
        from ..utils import atomic_path

        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels.astype(np.uint8), classes=np.array(classes))
    return ImageSet(images, labels, classes, str(p))
