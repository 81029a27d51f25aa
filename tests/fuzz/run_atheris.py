"""Coverage-guided fuzzing of one target of targets.py with atheris.

    python tests/fuzz/run_atheris.py TARGET [libFuzzer options] NEW_DIR SEED_DIR

scripts/run-fuzz.sh runs it for each target against a build of the C core
instrumented for libFuzzer (clang -fsanitize=fuzzer-no-link,address), so
the coverage of the C parser and decoders guides the mutations, on top of
the Python code's. A crash, a hang past -timeout or an exception other than
the library's own error stops the run with the input saved (crash-*,
timeout-*) and a non-zero exit.
"""

import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

with atheris.instrument_imports(include=["pylogicaldecoding", "targets"]):
    import targets


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit("usage: run_atheris.py {%s} [libFuzzer args]"
                 % "|".join(targets.TARGETS))
    target = getattr(targets, sys.argv[1])
    atheris.Setup([sys.argv[0]] + sys.argv[2:], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
