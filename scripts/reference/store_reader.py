"""Reads (and writes) fastretrain feature stores (crates/core/src/store/) in NumPy, independently of the Rust code:
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


def _put_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _put_string(s):
    b = s.encode()
    return _put_varint(len(b)) + b


def write_store(path, x, labels, sha256, model_path, tensor="features", precision="f32",
                chunk_rows=256, source="python"):
    """Writes features x (n x d) with their labels as a fastretrain feature store (the layout
    read_store reads), so features computed elsewhere (onnxruntime) can be fitted by
    `fastretrain fit --store`. `sha256` and `tensor` must be those of the model they came from."""
    n, dim = x.shape
    code = {"f16": 0, "f32": 1}[precision]
    dtype = {"f16": "<f2", "f32": "<f4"}[precision]
    header = (_put_string(sha256) + _put_string(tensor) + _put_varint(dim)
              + _put_string(model_path) + _put_varint(code) + _put_varint(chunk_rows))
    with open(path, "wb") as f:
        f.write(b"FRSTORE\0" + struct.pack("<II", 1, len(header)) + header
                + struct.pack("<I", zlib.crc32(header)))
        for start in range(0, n, chunk_rows):
            rows = x[start:start + chunk_rows]
            names = labels[start:start + chunk_rows]
            meta = (_put_string(source) + _put_varint(len(rows)) + _put_varint(len(names))
                    + b"".join(_put_string(s) for s in names))
            body = meta + np.ascontiguousarray(rows, dtype=dtype).tobytes()
            f.write(b"CHNK" + struct.pack("<III", len(meta), len(rows), zlib.crc32(body)) + body)
