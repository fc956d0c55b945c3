"""Which data sets sotakit knows, where their bytes come from, and where they are on this machine.

Every remote file carries a checksum copied from a maintained public source (named next to it),
never computed from an unverified download. ``locate`` finds a data set already on disk
(``data_root`` argument, ``$SOTAKIT_DATA``, a system package, the user cache) and only downloads
when none of those has it; offline, it says exactly where it looked and how to fix it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

# Aliased because ``locate`` has a ``download: bool`` parameter.
from .download import DownloadError, Progress, extract
from .download import download as download_file

LAYOUTS = ("idx", "cifar-binary", "imagefolder")

# Where downloads go when neither data_root nor $SOTAKIT_DATA is given; also searched last.
DEFAULT_CACHE = Path.home() / ".cache" / "sotakit" / "data"

# Data sets shipped by a distribution package: name -> (folder, package). Tests monkeypatch this.
SYSTEM_DIRS: dict[str, tuple[Path, str]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}

# Base URL replacing every file's directory, for tests and local mirrors (also ``base_url=``).
MIRROR_ENV = "SOTAKIT_MIRROR"
DATA_ENV = "SOTAKIT_DATA"

CIFAR_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
# The python version's pickled batches, still read when already on disk (see cifar.py).
CIFAR_PYTHON_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class DataNotFoundError(FileNotFoundError):
    """A data set is on none of the searched paths and could not be downloaded."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a data set.

    Attributes:
        filename: Name on the server and on disk.
        url: Official download address.
        sha256: Published SHA-256, or None where the source publishes only MD5.
        md5: Published MD5; verified only when no SHA-256 is known.
        alt_sha256: SHA-256 of other byte-level packagings with identical content that are
            equally acceptable (e.g. a distribution's re-compressed copy served from a mirror).
    """

    filename: str
    url: str
    sha256: str | None
    md5: str | None = None
    alt_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, verify and normalise one data set.

    Attributes:
        name: Catalog key, e.g. ``"imagenette-160"``.
        classes: Class names in label order.
        native_size: Side length in pixels the images are published at (shorter side for
            Imagenette/Imagewoof).
        mean: Per-channel RGB mean of the training set, for ``Normalize``.
        std: Per-channel RGB standard deviation of the training set.
        files: The remote files making up the data set.
        layout: ``"idx"`` (gzip IDX files), ``"cifar-binary"`` (CIFAR's binary batches; a legacy
            folder of its pickled python batches is read too) or ``"imagefolder"``
            (``train/<class>/*`` and ``val/<class>/*``).
        folder: Name of the folder the archive unpacks to (None for ``"idx"``).
        legacy_folder: Folder of an older packaging that is used when already on disk but never
            downloaded (CIFAR-10's ``cifar-10-batches-py``).
    """

    name: str
    classes: tuple[str, ...]
    native_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    files: tuple[RemoteFile, ...]
    layout: str
    folder: str | None = None
    legacy_folder: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout {self.layout!r} not in {LAYOUTS}")


# --- Fashion-MNIST -------------------------------------------------------------------------------
_FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# (filename, sha256, md5, Debian sha256). SHA-256 of the official files: tensorflow/datasets
# url_checksums/fashion_mnist.txt; MD5: torchvision.datasets.FashionMNIST. Debian's copies in
# /usr/share/datasets/fashion-mnist/ are the same data re-gzipped without the stored file name
# (23-24 bytes shorter), so their SHA-256 differs; those values were computed from the package.
_FASHION_FILES = (
    ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
     "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
     "25c81989df183df01b3e8a0aad5dffbe", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
     "bef4ecab320f06d8554ea6380940ec79", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
     "bb300cfdad3c16e7a12a480ee83cd310", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
)

_FASHION = DatasetSpec(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    native_size=28,
    # Grey images are fed as 3 identical channels so every model sees RGB; computed on the 60k train set.
    mean=(0.2860, 0.2860, 0.2860),
    std=(0.3530, 0.3530, 0.3530),
    files=tuple(RemoteFile(f, _FASHION_BASE + f, sha, md5, (deb,)) for f, sha, md5, deb in _FASHION_FILES),
    layout="idx",
)

# --- CIFAR-10 ------------------------------------------------------------------------------------
_CIFAR10 = DatasetSpec(
    name="cifar10",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    native_size=32,
    # Population statistics over all train pixels (not the often-copied mean of per-image stds).
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    files=(
        # The binary version: fixed-size records, read without pickle (cifar.py).
        RemoteFile(
            "cifar-10-binary.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            # SHA-256: tensorflow/datasets url_checksums/cifar10.txt (170052171 bytes); MD5: the data
            # set's page, https://www.cs.toronto.edu/~kriz/cifar.html.
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            "c32a1d4ab5d03f1284b67883e8d87530",
        ),
    ),
    layout="cifar-binary",
    folder="cifar-10-batches-bin",
    # Unpacked from cifar-10-python.tar.gz, which sotakit downloaded before; read if already there.
    legacy_folder="cifar-10-batches-py",
)

# --- Imagenette / Imagewoof (fast.ai) ------------------------------------------------------------
_FASTAI = "https://s3.amazonaws.com/fast-ai-imageclas/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# wnid -> ImageNet-1k class name (torchvision's _IMAGENET_CATEGORIES spelling). ImageFolder sorts
# the wnid folders, so label i is the i-th wnid in sorted order.
_IMAGENETTE_WNIDS = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}
_IMAGEWOOF_WNIDS = {
    "n02086240": "Shih-Tzu", "n02087394": "Rhodesian ridgeback", "n02088364": "beagle",
    "n02089973": "English foxhound", "n02093754": "Border terrier", "n02096294": "Australian terrier",
    "n02099601": "golden retriever", "n02105641": "Old English sheepdog", "n02111889": "Samoyed",
    "n02115641": "dingo",
}
# fast.ai re-uploaded these archives in 2021 (old checksums circulate). fast.ai's own checks.txt
# holds the MD5 of only the first MiB, so it cannot verify a whole file and is not used.
# imagenette2: SHA-256 from tensorflow/datasets datasets/imagenette/checksums.tsv (post-2021 sizes
# 99003388 / 341663724 agree with fastai's download_checks.py); MD5 from torchvision.datasets.Imagenette.
# imagewoof2: only MD5 is published (catalyst.contrib.datasets.imagewoof, matching two other users).
_FASTAI_ARCHIVES = {
    "imagenette-160": ("imagenette2-160", _IMAGENETTE_WNIDS, 160,
                       "64d0c4859f35a461889e0147755a999a48b49bf38a7e0f9bd27003f10db02fe5",
                       "e793b78cc4c9e9a4ccc0c1155377a412"),
    "imagenette-320": ("imagenette2-320", _IMAGENETTE_WNIDS, 320,
                       "569b4497c98db6dd29f335d1f109cf315fe127053cedf69010d047f0188e158c",
                       "3df6f0d01a2c9592104656642f5e78a3"),
    "imagewoof-160": ("imagewoof2-160", _IMAGEWOOF_WNIDS, 160, None, "3d200a7be99704a0d7509be2a9fbfe15"),
    "imagewoof-320": ("imagewoof2-320", _IMAGEWOOF_WNIDS, 320, None, "0f46d997ec2264e97609196c95897a44"),
}


def _fastai_spec(name: str, folder: str, wnids: dict[str, str], size: int, sha: str | None,
                 md5: str) -> DatasetSpec:
    archive = f"{folder}.tgz"
    return DatasetSpec(
        name=name,
        classes=tuple(wnids[w] for w in sorted(wnids)),
        native_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        files=(RemoteFile(archive, _FASTAI + archive, sha, md5),),
        layout="imagefolder",
        folder=folder,
    )


SPECS: dict[str, DatasetSpec] = {
    _FASHION.name: _FASHION,
    _CIFAR10.name: _CIFAR10,
    **{name: _fastai_spec(name, *args) for name, args in _FASTAI_ARCHIVES.items()},
}


def get_spec(name: str) -> DatasetSpec:
    """Return the spec for ``name``; a name close to a catalog name gets that name suggested.

    ``--data`` takes a folder or a catalog name, so an unknown name is reported as neither; the hint
    is only given for a real typo (difflib ratio >= 0.6), not the least distant of unrelated names.
    """
    try:
        return SPECS[name]
    except KeyError:
        close = difflib.get_close_matches(name, SPECS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no folder and no data set named {name!r}{hint} Data sets: {', '.join(SPECS)}; "
                         "a folder is given by its path and holds train/<class>/* and val/<class>/*"
                         ) from None


def _ready_in(spec: DatasetSpec, folder: Path) -> bool:
    if spec.layout == "idx":
        return all((folder / f.filename).is_file() for f in spec.files)
    if spec.layout == "cifar-binary":
        return (all((folder / b).is_file() for b in CIFAR_BATCHES)
                or all((folder / b).is_file() for b in CIFAR_PYTHON_BATCHES))
    return (folder / "train").is_dir() and (folder / "val").is_dir()


def find_ready(spec: DatasetSpec, root: Path) -> Path | None:
    """The folder under ``root`` (itself or ``<root>/<name>/``, each possibly holding the unpacked
    ``spec.folder`` or ``spec.legacy_folder``) that holds the data set ready to read, or None."""
    subfolders = [f for f in (spec.folder, spec.legacy_folder) if f]
    for base in (root, root / spec.name):
        for folder in (base, *(base / f for f in subfolders)):
            if _ready_in(spec, folder):
                return folder
    return None


def _search_roots(name: str, data_root: str | os.PathLike | None) -> list[tuple[Path, str]]:
    roots: list[tuple[Path, str]] = []
    if data_root is not None:
        roots.append((Path(data_root).expanduser(), "data_root / --data-root"))
    if os.environ.get(DATA_ENV):
        roots.append((Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"))
    if name in SYSTEM_DIRS:
        folder, package = SYSTEM_DIRS[name]
        roots.append((folder, f"Debian/Ubuntu package {package}"))
    roots.append((DEFAULT_CACHE, "default cache"))
    return roots


def _writable_target(name: str, data_root: str | os.PathLike | None) -> Path | None:
    """``<root>/<name>/`` under the first of data_root, $SOTAKIT_DATA, the cache that we may write."""
    candidates = [data_root, os.environ.get(DATA_ENV) or None, DEFAULT_CACHE]
    for root in candidates:
        if root is None:
            continue
        target = Path(root).expanduser() / name
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(target, os.W_OK | os.X_OK):
            return target
    return None


def _url(file: RemoteFile, base_url: str | None) -> str:
    base = base_url if base_url is not None else os.environ.get(MIRROR_ENV)
    return f"{base.rstrip('/')}/{file.filename}" if base else file.url


def _fetch(spec: DatasetSpec, target: Path, base_url: str | None, progress: Progress | None) -> Path:
    """Download (or reuse already verified) files into ``target``, unpack, return the ready folder."""
    # Another process (e.g. another DDP rank) may be fetching the same data set right now; filelock
    # waits for it portably (flock on POSIX, msvcrt on Windows).
    with FileLock(target / ".lock"):
        if (ready := find_ready(spec, target)) is not None:
            return ready
        for f in spec.files:
            # Returns at once, without network, when a verified copy is already there.
            download_file(_url(f, base_url), target / f.filename, f.sha256, md5=f.md5,
                          alt_sha256=f.alt_sha256, progress=progress)
        if spec.layout != "idx":
            for f in spec.files:
                extract(target / f.filename, target)
        if (ready := find_ready(spec, target)) is None:
            raise DataNotFoundError(f"{spec.name}: unpacked {target} but found no {spec.layout} layout in it")
        return ready


def locate(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
    base_url: str | None = None,
) -> Path:
    """Return the folder holding data set ``name`` ready to read, downloading it if needed.

    Searched in order, each root both directly and in a ``<root>/<name>/`` subfolder: ``data_root``,
    ``$SOTAKIT_DATA``, the system package folder (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``),
    ``~/.cache/sotakit/data``. If absent, files are downloaded into ``<root>/<name>/`` of the first
    writable of ``data_root``, ``$SOTAKIT_DATA``, the cache, verified, and unpacked. An archive
    copied there by hand is verified and unpacked without network.

    Args:
        name: A key of ``SPECS``.
        data_root: Preferred root folder (the ``--data-root`` option).
        download: Whether fetching is allowed when the data set is nowhere on disk.
        progress: ``progress(bytes_done, bytes_total_or_None)`` while downloading.
        base_url: Fetch files as ``<base_url>/<filename>`` instead of the official URLs (tests and
            mirrors; ``$SOTAKIT_MIRROR`` does the same).

    Returns:
        For ``idx`` the folder with the gz files, for ``cifar-binary`` the ``cifar-10-batches-bin``
        folder (or a ``cifar-10-batches-py`` folder already on disk), for ``imagefolder`` the folder
        holding ``train/`` and ``val/``.

    Raises:
        ValueError: Unknown ``name`` (the closest known name is suggested).
        DataNotFoundError: Not on disk and not downloadable; lists every place tried and remedies.
    """
    spec = get_spec(name)
    roots = _search_roots(name, data_root)
    for root, _ in roots:
        if (ready := find_ready(spec, root)) is not None:
            return ready
    failure, cause = "downloading was disabled (download=False)", None
    if download:
        target = _writable_target(name, data_root)
        if target is None:
            failure = "no writable folder to download into"
        else:
            try:
                return _fetch(spec, target, base_url, progress)
            except (OSError, DownloadError) as e:  # offline, HTTP errors, checksum mismatch
                failure, cause = f"downloading into {target} failed: {e}", e
    raise DataNotFoundError(_not_found_message(spec, roots, failure)) from cause


def _not_found_message(spec: DatasetSpec, roots: list[tuple[Path, str]], failure: str) -> str:
    lines = [f"data set {spec.name!r} not found. Looked in (each directly and in '{spec.name}/'):"]
    lines += [f"  - {root}  ({why})" for root, why in roots]
    if not os.environ.get(DATA_ENV):
        lines.append(f"  (${DATA_ENV} is not set)")
    lines.append(f"Then {failure}.")
    lines.append("Remedies:")
    wanted = ", ".join(f.filename for f in spec.files)
    if spec.name in SYSTEM_DIRS:
        folder, package = SYSTEM_DIRS[spec.name]
        lines.append(f"  - as root: apt-get install {package}   (installs {folder})")
    if spec.layout == "idx":
        lines.append(f"  - --data-root PATH or ${DATA_ENV}=PATH, PATH being a folder holding {wanted}")
    else:
        older = f" (or an older {spec.legacy_folder}/)" if spec.legacy_folder else ""
        lines.append(f"  - --data-root PATH or ${DATA_ENV}=PATH, PATH holding the unpacked {spec.folder}/ "
                     f"folder{older}")
        lines.append(f"  - copy {wanted} into PATH/{spec.name}/ and rerun with downloading allowed: "
                     "it is verified and unpacked without network")
    urls = ", ".join(f.url for f in spec.files)
    lines.append(f"  - rerun with internet access to download {urls}")
    return "\n".join(lines)
