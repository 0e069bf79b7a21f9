#!/usr/bin/env python3
"""Write the hostile-input corpus under tests/data/hostile/ (images, IDX, label names, models,
.npy tensors for the keyword-spotting model of tests/data/signal).

The state files of the corpus need fastretrain itself to write a valid state first; they are
made by scripts/reference/make_hostile_states.sh. tests/hostile.rs runs every relevant command on each
file. See docs/TRUST.md for the list and the message each one gets.
"""
import gzip
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/data/hostile")


def png_bytes(img, **kw):
    b = io.BytesIO()
    img.save(b, format="PNG", **kw)
    return b.getvalue()


def jpeg_bytes(img):
    b = io.BytesIO()
    img.save(b, format="JPEG", quality=90)
    return b.getvalue()


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width, height):
    """A valid PNG header claiming width × height pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def idx(kind, dims, payload=b""):
    return struct.pack(">HBB", 0, 0x08, kind) + struct.pack(">" + "I" * len(dims), *dims) + payload


def write(rel, data):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def main():
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB")
    good_png, good_jpg = png_bytes(photo), jpeg_bytes(photo)

    # Images that must be refused.
    write("images/bad/corrupt.png", good_png[:16] + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    write("images/bad/corrupt.jpg", good_jpg[:20] + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    write("images/bad/truncated.png", good_png[: len(good_png) // 2])
    write("images/bad/truncated.jpg", good_jpg[: len(good_jpg) // 3])
    write("images/bad/zero_bytes.png", b"")
    write("images/bad/bomb_60000x60000.png", bomb_png(60000, 60000))
    write("images/bad/text_named.jpg", b"this is a text file, not a JPEG\n")
    gif = io.BytesIO()
    photo.save(gif, format="GIF")
    write("images/bad/gif_named.png", gif.getvalue())

    # Unusual but valid images that must be accepted.
    grey16 = Image.fromarray((rng.integers(0, 65536, (30, 20))).astype(np.uint16))
    write("images/ok/grey16.png", png_bytes(grey16))
    write("images/ok/palette.png", png_bytes(photo.convert("P", palette=Image.ADAPTIVE, colors=16)))
    write("images/ok/rgba.png", png_bytes(photo.convert("RGBA")))
    write("images/ok/grey_alpha.png", png_bytes(photo.convert("LA")))
    write("images/ok/cmyk.jpg", jpeg_bytes(photo.convert("CMYK")))
    write("images/ok/grey.jpg", jpeg_bytes(photo.convert("L")))
    write("images/ok/one_pixel.png", png_bytes(photo.resize((1, 1))))
    write("images/ok/tall_1x900.png", png_bytes(photo.resize((1, 900))))

    # IDX files with lying or broken headers (each with a labels file beside it).
    img3 = bytes(rng.integers(0, 256, 3 * 784, dtype=np.uint8))
    write("idx/lying_count-images-idx3-ubyte.gz", gz(idx(3, [100, 28, 28], img3)))
    write("idx/lying_count-labels-idx1-ubyte.gz", gz(idx(1, [100], bytes(100))))
    write("idx/count_mismatch-images-idx3-ubyte.gz", gz(idx(3, [3, 28, 28], img3)))
    write("idx/count_mismatch-labels-idx1-ubyte.gz", gz(idx(1, [4], bytes(4))))
    write("idx/wrong_magic-images-idx3-ubyte.gz", gz(struct.pack(">I", 0x00000801) + img3))
    write("idx/wrong_magic-labels-idx1-ubyte.gz", gz(idx(1, [3], bytes(3))))
    write("idx/huge_dims-images-idx3-ubyte.gz", gz(idx(3, [1, 100000, 100000])))
    write("idx/huge_dims-labels-idx1-ubyte.gz", gz(idx(1, [1], bytes(1))))
    write("idx/label_out_of_range-images-idx3-ubyte.gz", gz(idx(3, [3, 28, 28], img3)))
    write("idx/label_out_of_range-labels-idx1-ubyte.gz", gz(idx(1, [3], bytes([1, 2, 200]))))
    whole = gz(idx(3, [3, 28, 28], img3))
    write("idx/truncated_gzip-images-idx3-ubyte.gz", whole[: len(whole) // 2])
    write("idx/truncated_gzip-labels-idx1-ubyte.gz", gz(idx(1, [3], bytes(3))))
    write("idx/empty-images-idx3-ubyte", b"")
    write("idx/empty-labels-idx1-ubyte", b"")

    # Label names: control characters are refused; odd unicode and separators are just text.
    write("labels/control_chars.txt", "T-shirt\nTrouser\x1b[31m\nPullover\n".encode())
    write("labels/unicode_and_separators.txt",
          "T-shirt/top\nTrouser\\pants\nPull‮over\nDress 👗\nCoat\nSandal\nShirt\n"
          "Sneaker\nBag\nAnkle boot\n".encode())
    write("labels/empty.txt", b"\n\n")

    # Tensor samples for tests/data/signal/kws_conv1d.onnx (one sample: float (40, 98)).
    def npy(array):
        b = io.BytesIO()
        np.save(b, array)
        return b.getvalue()

    good = rng.normal(-4, 1, (40, 98)).astype(np.float32)
    write("tensors/bad/wrong_shape.npy", npy(good[:, :97]))
    write("tensors/bad/batch_axis.npy", npy(good[None]))
    nan = good.copy()
    nan[3, 5] = np.nan
    write("tensors/bad/nan.npy", npy(nan))
    inf = good.copy()
    inf[39, 97] = -np.inf
    write("tensors/bad/inf.npy", npy(inf))
    write("tensors/bad/int32.npy", npy(good.astype(np.int32)))
    write("tensors/bad/big_endian.npy", npy(good.astype(">f4")))
    write("tensors/bad/fortran_order.npy", npy(np.asfortranarray(good)))
    write("tensors/bad/truncated.npy", npy(good)[:1000])
    write("tensors/bad/text_named.npy", b"0.1, 0.2, 0.3\n")
    write("tensors/bad/complex.npy", npy(good.astype(np.complex64)))
    write("tensors/bad/overflow_f64.npy", npy(np.full((40, 98), 1e300)))
    # Arrays of samples with broken labels (each array holds 3 good samples).
    three = np.stack([good, good + 1, good - 1])
    write("tensors/arrays/count_mismatch.npy", npy(three))
    write("tensors/arrays/count_mismatch-labels.txt", b"yes\nno\n")
    write("tensors/arrays/float_labels.npy", npy(three))
    write("tensors/arrays/float_labels-labels.npy", npy(np.array([0.0, 1.0, 2.0])))
    write("tensors/arrays/empty_label.npy", npy(three))
    write("tensors/arrays/empty_label-labels.txt", b"yes\n\nno\n")
    write("tensors/arrays/lying_count.npy", npy(three)[: 128 + 2 * 40 * 98 * 4])
    write("tensors/arrays/lying_count-labels.txt", b"yes\nno\nup\n")

    # Models.
    write("models/not_onnx.onnx", b"this is not an onnx file\n")
    with open(os.path.join(ROOT, "tests/data/models/tiny_cnn.onnx"), "rb") as f:
        tiny = f.read()
    write("models/truncated.onnx", tiny[: len(tiny) // 2])
    with open(os.path.join(ROOT, "tests/data/models/tiny_cnn.json"), "rb") as f:
        spec = f.read()
    write("models/truncated.json", spec)
    write("models/not_onnx.json", spec)
    write("models/bad_spec.onnx", tiny)
    write("models/bad_spec.json", spec.replace(b'"crop": 16', b'"crop": 160'))
    write("models/broken_spec_json.onnx", tiny)
    write("models/broken_spec_json.json", spec[: len(spec) // 2])
    print("wrote", OUT)


if __name__ == "__main__":
    main()
