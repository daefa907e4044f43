"""Marketplace errors."""

from __future__ import annotations

from nome_core.errors import NotFound


class ImportNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such import")


class PackageNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such package")


class VersionNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no such version of the package")


class NotInstalled(NotFound):
    def __init__(self) -> None:
        super().__init__("the package is not installed")
