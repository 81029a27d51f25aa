"""Fuzz targets for the C core: the wire parser and both C decoders.

Each target takes one input, a sequence of frames (each a 2-byte big-endian
length and that many bytes: ``split()``/``join()``), and feeds it to the C
core; it returns normally when the core parsed the frames or refused them
with the library's own error, and raises anything else (a crash, a hang, an
exception of the wrong kind is a bug).

- ``wire``: the frames are CopyData payloads a fake walsender sends on a
  real libpq connection, then it ends the COPY; the Reader reads them all.
- ``pgoutput``: the frames are pgoutput messages for one fresh decoder.
- ``test_decoding``: the frames are test_decoding lines (as bytes).

Used by tests/fuzz/run_atheris.py (coverage-guided, scripts/run-fuzz.sh) and
tests/test_fuzz_corpus.py (the committed corpus, in the ordinary suite).
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # tests/: fakeserver

import pylogicaldecoding._core as core  # noqa: E402
from pylogicaldecoding import decoders  # noqa: E402

from fakeserver import drive  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")
TARGETS = ["wire", "pgoutput", "test_decoding"]
LSN = 0x16B374D848


def split(data):
    """The frames of an input; a short last frame is kept as it is."""
    frames = []
    pos = 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        pos += 2
        frames.append(data[pos:pos + n])
        pos += n
    return frames


def join(frames):
    return b"".join(struct.pack("!H", len(f)) + f for f in frames)


def wire(data, max_frames=16):
    drive(split(data)[:max_frames])


def pgoutput(data):
    d = decoders.make_decoder("pgoutput")
    for frame in split(data):
        try:
            d(core.Message(frame, LSN))
        except core.DecodingError:
            pass


def test_decoding(data):
    d = decoders.make_decoder("test_decoding")
    for frame in split(data):
        try:
            d(core.Message(frame, LSN))
        except core.DecodingError:
            pass


def corpus_files(target):
    folder = os.path.join(CORPUS, target)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))
