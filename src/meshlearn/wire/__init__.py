"""meshlearn.wire: the one encoding of everything nodes exchange and store.

* :class:`Message` (``message.py``): kind + JSON meta + named numpy tensors;
* :class:`MetaRecord` (``meta.py``): typed instructions carried in meta, checked on arrival;
* quantisation schemes (``quant.py``): the one registry of named lossy encodings (fp32, fp16,
  int8, simplex8, uniform) with their error bounds, used by FL tensors, soft labels and the split
  channel;
* tensor codecs (``tensors.py``, ``compress.py``): fp16/int8 quantization, zstd/lz4 compression,
  strict validation of what peers send;
* the envelope (``envelope.py``): ``Message`` <-> deterministic bytes;
* packets (``packet.py``): compact struct-encoded control packets (overlay gossip), told apart
  from envelopes by their first byte;
* frames (``frame.py``): source id, length, optional HMAC; what sockets carry and what the
  simulator counts, so simulated bytes equal real bytes;
* files (``files.py``): safetensors checkpoints written atomically;

Typical use::

    frames = FrameCodec(secret)
    wire = frames.seal("client-3", encode_message(Message.make("fl.update", {"w": w}, round=2)))
    src, payload = frames.open(wire)
    msg = decode_message(payload)
"""

from meshlearn.wire.compress import COMPRESSORS, Compressor
from meshlearn.wire.envelope import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DECODED_BYTES,
    MAX_HEADER_BYTES,
    decode_message,
    encode_message,
)
from meshlearn.wire.files import load_tensors, save_tensors
from meshlearn.wire.frame import DEFAULT_MAX_FRAME_BYTES, HEADER_SIZE, MAC_SIZE, FrameCodec
from meshlearn.wire.message import Message
from meshlearn.wire.meta import MetaRecord
from meshlearn.wire.packet import Packet, decode_payload, encode_payload, register_packet
from meshlearn.wire.quant import QUANT_SCHEMES, QuantScheme, Quantized, get_scheme
from meshlearn.wire.tensors import SUPPORTED_DTYPES, TensorCodec, decode_tensor, encode_tensor

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "FrameCodec",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAX_HEADER_BYTES",
    "Message",
    "MetaRecord",
    "Packet",
    "QUANT_SCHEMES",
    "QuantScheme",
    "Quantized",
    "SUPPORTED_DTYPES",
    "TensorCodec",
    "decode_message",
    "decode_payload",
    "decode_tensor",
    "encode_message",
    "encode_payload",
    "encode_tensor",
    "get_scheme",
    "load_tensors",
    "register_packet",
    "save_tensors",
]
