#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses: tests/fuzz/corpus/<name>/.

Small valid inputs in each harness's input format (see the comment at the
top of each tests/fuzz/fuzz_<name>.c). The files are committed; run this
again (python3 tests/fuzz/make_corpus.py) after changing a format.
"""
import gzip
import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def write(name, fname, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


# ---- frames (docs/protocol.md sections 3 and 9) ----

def frame(kind, seq, status, name, payload):
    return struct.pack("<IBBHQI", 16 + len(name) + len(payload), 1, kind,
                       len(name), seq, status) + name + payload


def i64(v):
    return struct.pack("<Bq", 2, v)


def frames():
    req = frame(1, 1, 0, b"Arith.Multiply", i64(7) + i64(8))
    rep = frame(2, 1, 0, b"", i64(56))
    err = frame(2, 3, 2, b"divide by zero", b"")
    write("frame", "request", req)
    write("frame", "reply", rep)
    write("frame", "error_reply", err)
    write("frame", "stream", req + rep + err + frame(2, 9, 4, b"x", b""))


# ---- codec payloads (docs/protocol.md section 8) ----

SCALAR = {1: "<i", 2: "<q", 3: "<I", 4: "<Q", 5: "<f", 6: "<d"}
ESIZE = {10: 4, 11: 8, 12: 8, 13: 4}
AFMT = {10: "f", 11: "d", 12: "q", 13: "I"}


def encode(fields):
    """fields: [(kind, value)]; the canonical encoding."""
    out = b""
    for kind, v in fields:
        if kind in SCALAR:
            out += bytes([kind]) + struct.pack(SCALAR[kind], v)
        elif kind == 7:
            out += bytes([7, 1 if v else 0])
        elif kind in (8, 9):
            out += bytes([kind]) + struct.pack("<I", len(v)) + v
        else:
            es = ESIZE[kind]
            out += b"\0" * ((es - (len(out) + 9) % es) % es)
            out += bytes([kind]) + struct.pack("<Q", len(v))
            out += struct.pack("<%d%s" % (len(v), AFMT[kind]), *v)
    return out


def codec_input(t, flags, mask, caps, payload):
    return bytes([t, flags, mask]) + bytes(caps) + payload


def codecs():
    all_fields = [(1, -5), (2, -(1 << 62)), (3, 4000000000), (4, (1 << 64) - 1),
                  (5, 3.25), (6, -0.125), (7, True), (8, b"hello"),
                  (9, b"\0\1\2"), (10, [1.5, -2.25, 3.0]), (11, [1.0 / 3]),
                  (12, [-1, 1 << 40]), (13, [0, 7, 0xFFFFFFFF])]
    caps = [8, 8, 8, 8, 8, 8]
    write("codec", "all_views", codec_input(0, 0, 0, caps, encode(all_fields)))
    write("codec", "all_buffers", codec_input(0, 0, 0x3F, caps, encode(all_fields)))
    mixed = [(1, 42), (7, True), (8, b"hi"), (11, [1.5, -2.0]), (10, [1.0, 2.0, 3.0])]
    write("codec", "mixed", codec_input(1, 0, 0, caps, encode(mixed)))
    arrs = [(10, [1.0, 2.0]), (13, [1, 2, 3]), (11, [4.0]), (12, [5, 6]), (10, [])]
    write("codec", "arrays_mixed", codec_input(4, 0, 0x05, [2, 0, 3, 1, 4, 4], encode(arrs)))
    bulk = [(1, 3), (11, [1.0, 2.0, 3.0]), (8, b"abc"), (13, [9, 8])]
    write("codec", "bulk", codec_input(5, 1, 0x01, [4, 4, 4, 4, 4, 4], encode(bulk)))
    spush = [(4, 1), (4, 2), (1, 1), (13, [0, 5]), (10, [0.5, -0.5])]
    write("codec", "ps_spush", codec_input(11, 1, 0x03, [2, 2, 2, 2, 2, 2], encode(spush)))
    write("codec", "empty", codec_input(6, 0, 0, caps, b""))


# ---- IDX files: [flags][classes][opts][level][split u16][cut u16][body] ----

def idx(type_byte, dims, values):
    hdr = bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    if type_byte == 0x08:
        return hdr + bytes(values)
    return hdr + b"".join(struct.pack(">f", v) for v in values)


def idx_input(flags, body, split=0, classes=0, opts=3 << 2, level=6, cut=0):
    return bytes([flags, classes, opts, level]) + struct.pack("<HH", split, cut) + body


def idxs():
    img = idx(0x08, [3, 2, 2], range(0, 240, 20))
    lab = idx(0x08, [3], [0, 2, 1])
    write("idx", "u8_labels", idx_input(0x04, img + lab, split=len(img)))
    write("idx", "u8_labels_gzip", idx_input(0x04 | 0x01 | 0x08, img + lab, split=len(img)))
    write("idx", "u8_plain", idx_input(0x00, img))
    write("idx", "f32_4d", idx_input(0x20, idx(0x0D, [2, 1, 2, 2], [0.5, -1.0, 2.5, 3.0, 0, 1e-3, 7, -7])))
    write("idx", "u8_classes", idx_input(0x84, img + lab, split=len(img), classes=3))
    write("idx", "u8_remap_gzip_cut", idx_input(0x46, img + lab, split=len(img), cut=20))
    # 70000 images of 2x2 and their labels, filled out from a few bytes
    # (opts bits 4-5 = 1): past the reader's first allocation and chunk
    big = idx(0x08, [70000, 2, 2], range(0, 250, 10))
    big_lab = idx(0x08, [70000], [1, 0, 3, 2])
    write("idx", "u8_big_fill", idx_input(0x0D, big + big_lab, split=len(big),
                                          opts=(3 << 2) | (1 << 4)))


# ---- LIBSVM: [flags][opts][dim][classes][level][cut u16][body] ----

def svm_input(flags, text, opts=3 << 2, dim=0, classes=0, level=6, cut=0):
    return bytes([flags, opts, dim, classes, level]) + struct.pack("<H", cut) + text


def svms():
    text = (b"# a comment\n"
            b"1 1:0.5 3:-1.25 10:2e3\n"
            b"-1 qid:3 2:1 4:0\r\n"
            b"\n"
            b"+1\t5:1e-3   # trailing comment\n"
            b"0 1:1")
    write("libsvm", "sparse", svm_input(0x00, text))
    write("libsvm", "sparse_gzip", svm_input(0x01, text))
    write("libsvm", "dense_remap", svm_input(0x18, text))
    zero = b"2 0:1 1:2\n0 2:3\n1 0:0.25\n"
    write("libsvm", "zero_based_classes_dim", svm_input(0x64, zero, dim=4, classes=3))
    write("libsvm", "long_line", svm_input(0x80, b"1 1:1\n2 1:1 2:2 3:3 4:4 5:5\n"))
    # repeated 2^r times (opts bits 4-7): many rows; one line of 176 KB, cut to 256 KiB at most
    write("libsvm", "many_rows", svm_input(0x00, b"1 1:0.5 3:2\n-1 2:1 7:1e-2\n",
                                           opts=(3 << 2) | (10 << 4)))
    write("libsvm", "long_comment", svm_input(0x01, b"# ten bytes",
                                              opts=(3 << 2) | (14 << 4)))


# ---- checkpoints: [mode][flags][ls][nsec][meta_len u16][pos u16][xor][kind]
#      [meta][body] (docs/checkpoint.md) ----

def sec(tag, data):
    h = struct.pack("<IQ", tag, len(data))
    return h + struct.pack("<I", zlib.crc32(h)) + data


def ckpt_file(kind, meta, secs, level=6):
    raw = b"".join(sec(t, d) for t, d in secs)
    comp = zlib.compress(raw, level)
    file_len = 40 + len(meta) + len(comp) + 28
    h = b"DMLCKPT\0" + struct.pack("<IIIIQI", 1, kind, len(meta), len(secs), file_len,
                                   zlib.crc32(meta))
    h += struct.pack("<I", zlib.crc32(h))
    t = b"DMLCKEND" + struct.pack("<QQ", len(raw), len(comp))
    t += struct.pack("<I", zlib.crc32(meta + comp + t))
    return h + meta + comp + t


def floats(*v):
    return struct.pack("<%df" % len(v), *v)


def ps_meta(dim, rule, steps=3, updates=5):
    m = struct.pack("<QQQII", dim, steps, updates, rule, 0)
    m += floats(0.01, 0, 0.9, 0.9, 0.999, 1e-8)
    m += struct.pack("<QIQ", 0, 0, 0) + floats(0, 0, 0)
    assert len(m) == 88
    return m


def ckpt_input(mode, flags, ls, nsec, meta, body, pos=0, xor=0, kind=0):
    return (bytes([mode, flags, ls, nsec]) + struct.pack("<HHBB", len(meta), pos, xor, kind)
            + meta + body)


def ckpts():
    PS = 0x53504D44
    # a parameter store: dim 4 (store bits 0-1 = 2), SGD (rule 0): one section
    body = sec(1, floats(1, 2, 3, 4))
    write("ckpt", "ps_sgd", ckpt_input(1, 0x1F, (2 << 4) | 0, 0, ps_meta(4, 0), body))
    # dim 2 (1), Adam (rule 3): params, two state vectors; zlib default level
    body = sec(1, floats(1, 2)) + sec(2, floats(0.5, 0.5)) + sec(3, floats(0, 1e-3))
    write("ckpt", "ps_adam", ckpt_input(1, 0x1F, ((1 | 3 << 2) << 4) | 7, 0, ps_meta(2, 3), body))
    # a generic container: three sections, one empty, stored (level 0)
    body = sec(7, b"abc") + sec(7, b"") + sec(0xFFFFFFFF, bytes(range(40)))
    write("ckpt", "generic_stored", ckpt_input(1, 0x07, 1, 0, b"meta!", body, kind=9))
    # compressed data given as is
    comp = zlib.compress(sec(5, b"hello"), 9)
    write("ckpt", "verbatim_zlib", ckpt_input(2, 0x04, 0, 1, b"", comp, kind=1))
    # a whole file, built here from docs/checkpoint.md
    f = ckpt_file(PS, ps_meta(1, 1), [(1, floats(0.25)), (2, floats(-1))])
    write("ckpt", "raw_file", bytes([0, 0, 4 << 4]) + bytes(7) + f)
    # a 100000-byte section from 12 bytes (mode bit 2), stored (level 0)
    big = struct.pack("<IQ", 4, 100000) + b"\0\0\0\0" + b"0123456789ab"
    write("ckpt", "big_section_stored", ckpt_input(1 | 4, 0x07, 1, 0, b"", big, kind=2))
    # damaged: a bit flipped in the compressed data
    write("ckpt", "ps_sgd_flipped", ckpt_input(1, 0x3F, (2 << 4) | 0, 0, ps_meta(4, 0),
                                               sec(1, floats(1, 2, 3, 4)), pos=140, xor=4))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    frames()
    codecs()
    idxs()
    svms()
    ckpts()
    total = sum(os.path.getsize(os.path.join(r, f))
                for r, _, fs in os.walk(OUT) for f in fs)
    print("corpus: %d bytes in %s" % (total, OUT))


if __name__ == "__main__":
    main()
