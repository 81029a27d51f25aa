"""The fuzz targets (tests/fuzz/targets.py) over the committed corpus: the
streams captured from a real server decode without an error, and every
input the fuzzer once found a bug with (``regress-*``) is handled. The
coverage-guided runs themselves are scripts/run-fuzz.sh's."""

import os
import select
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "fuzz"))

import pylogicaldecoding._core as core  # noqa: E402
from pylogicaldecoding import decoders  # noqa: E402

import targets  # noqa: E402
from fakeserver import streaming_reader  # noqa: E402


def inputs(target):
    return [pytest.param(path, id=os.path.basename(path))
            for path in targets.corpus_files(target)]


def test_corpus_is_there():
    for target in targets.TARGETS:
        assert len(targets.corpus_files(target)) >= 5, target


@pytest.mark.parametrize("path", inputs("pgoutput") + inputs("test_decoding"))
def test_captured_streams_decode(path):
    plugin = os.path.basename(os.path.dirname(path))
    with open(path, "rb") as f:
        data = f.read()
    if os.path.basename(path).startswith("regress-"):
        getattr(targets, plugin)(data)      # handled: no other exception
        return
    d = decoders.make_decoder(plugin)
    changes = [d(core.Message(frame, targets.LSN))
               for frame in targets.split(data)]
    assert any(c is not None for c in changes)


@pytest.mark.parametrize("path", inputs("wire"))
def test_captured_frames_are_read(path):
    with open(path, "rb") as f:
        frames = targets.split(f.read())
    r, srv = streaming_reader(frames, hold=2)
    r.binary = True
    try:
        want = [fr[25:] for fr in frames if fr[:1] == b"w"]
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(want):
            assert time.monotonic() < deadline, (len(got), len(want))
            msg = r.read_message()
            if msg is None:
                select.select([r.fileno()], [], [], 0.1)
            else:
                got.append(msg.payload)
        assert got == want
    finally:
        r.close()
    # and the target's own run (the stream ended by the server) is clean
    targets.wire(targets.join(frames))
