"""The Avro contract of stagecast events and the codec for their single-object encoding."""

from schemas.codec import Codec, DecodeError, DecodeErrorCode, default_codec

__all__ = ["Codec", "DecodeError", "DecodeErrorCode", "default_codec"]
