"""Reads a fastretrain feature store (src/store.rs) into NumPy, independently of the Rust code:
header (magic, version, postcard header, crc32), then chunks (CHNK, meta, rows, crc32, meta,
features). Used by the peers (scikit-learn) so that they fit on exactly our features."""
import struct
import zlib

import numpy as np


def _varint(b, i):
    value = shift = 0
    while True:
        x = b[i]
        i += 1
        value |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return value, i


def _string(b, i):
    n, i = _varint(b, i)
    return b[i:i + n].decode(), i + n


def read_store(path):
    """Returns (features float32 n x d, labels list of str, header dict)."""
    data = open(path, "rb").read()
    if data[:8] != b"FRSTORE\0":
        raise ValueError(f"{path}: not a feature store")
    version, header_len = struct.unpack("<II", data[8:16])
    body = data[16:16 + header_len]
    (crc,) = struct.unpack("<I", data[16 + header_len:20 + header_len])
    if version != 1 or zlib.crc32(body) != crc:
        raise ValueError(f"{path}: unsupported version or damaged header")
    # postcard: Fingerprint {sha256, tensor, dim}, model_path, precision (enum index), chunk_rows
    sha, i = _string(body, 0)
    tensor, i = _string(body, i)
    dim, i = _varint(body, i)
    model_path, i = _string(body, i)
    precision, i = _varint(body, i)
    dtype = {0: "<f2", 1: "<f4"}[precision]
    width = {0: 2, 1: 4}[precision]
    offset = 20 + header_len
    features, labels = [], []
    while offset < len(data):
        magic = data[offset:offset + 4]
        meta_len, rows, crc = struct.unpack("<III", data[offset + 4:offset + 16])
        end = offset + 16 + meta_len + rows * dim * width
        if magic != b"CHNK" or end > len(data):
            raise ValueError(f"{path}: damaged or incomplete chunk at byte {offset}")
        chunk = data[offset + 16:end]
        if zlib.crc32(chunk) != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {offset}")
        meta = chunk[:meta_len]
        _source, j = _string(meta, 0)
        _consumed, j = _varint(meta, j)
        n, j = _varint(meta, j)
        for _ in range(n):
            label, j = _string(meta, j)
            labels.append(label)
        features.append(np.frombuffer(chunk[meta_len:], dtype=dtype).reshape(rows, dim))
        offset = end
    x = np.concatenate(features).astype(np.float32) if features else np.zeros((0, dim), np.float32)
    return x, labels, {"sha256": sha, "tensor": tensor, "dim": dim, "model_path": model_path,
                       "precision": ["f16", "f32"][precision]}
