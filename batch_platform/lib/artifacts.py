"""Model artefacts on disk: LightGBM boosters in their text format, content-addressed and verified on read.

A model is saved as ``<directory>/<sha256[:16]>.txt`` where the hash is taken over the exact bytes written, so a
file name says what it must contain and saving the same model twice is a no-op. Writes are atomic (temporary file
in the same directory, fsync, ``os.replace``, fsync of the directory): a reader never sees half a model. Readers
go through :func:`read_verified`, which recomputes the hash before handing the text to LightGBM
(``lgb.Booster(model_str=...)``). Never pickle a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from batch_platform.lib.files import atomic_write

_CHUNK = 1 << 20
_PREFIX_LEN = 16


class ArtifactError(Exception):
    """Base class for artefact storage problems."""


class ArtifactMissingError(ArtifactError):
    """The artefact file does not exist (any more)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(f"model artefact {self.path} is missing")

    def __reduce__(self):  # picklable across processes despite the custom signature
        return type(self), (self.path,)


class ArtifactIntegrityError(ArtifactError):
    """The artefact's bytes do not hash to the sha256 it was registered with."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"model artefact {self.path} failed its integrity check: expected sha256 {expected}, got {actual}"
        )

    def __reduce__(self):
        return type(self), (self.path, self.expected, self.actual)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (streamed); :class:`ArtifactMissingError` if it does not exist."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise ArtifactMissingError(Path(path)) from None
    return h.hexdigest()


def save_model_text(model_text: str, directory: Path) -> tuple[Path, str]:
    """Store a model's text (``booster.model_to_string()``) content-addressed under ``directory``.

    Returns ``(path, sha256)`` where ``sha256`` is the hex digest of the UTF-8 bytes written. Idempotent: if the
    file is already there with the right content it is left alone; a file of that name with other content
    (a damaged copy) is replaced.
    """
    if not isinstance(model_text, str) or not model_text:
        raise ArtifactError("model_text must be a non-empty string (LightGBM's text format)")
    data = model_text.encode("utf-8")
    digest = sha256_bytes(data)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest[:_PREFIX_LEN]}.txt"
    try:
        if sha256_file(path) == digest:
            return path, digest
    except ArtifactMissingError:
        pass
    atomic_write(path, data)
    return path, digest


def read_verified(path: Path, expected_sha256: str) -> str:
    """The model text at ``path``, after checking its bytes hash to ``expected_sha256``.

    Raises :class:`ArtifactMissingError` if the file is gone and :class:`ArtifactIntegrityError` (naming the path,
    the expected and the actual hash) if the content differs.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactMissingError(path) from None
    actual = sha256_bytes(data)
    if actual != expected_sha256.lower():
        raise ArtifactIntegrityError(path, expected_sha256, actual)
    return data.decode("utf-8")
