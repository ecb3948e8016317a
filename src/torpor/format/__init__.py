"""The torpor file format (docs/FORMAT.md): its constants, the container
(container, writer, reader), the chunk codec, dtype descriptions and the
MessagePack documents. Knows nothing of object graphs or of where files live."""

from .constants import FORMAT_VERSION

__all__ = ["FORMAT_VERSION"]
