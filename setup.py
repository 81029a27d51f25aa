"""Build the pylogicaldecoding C extension against libpq.

libpq is located with ``pg_config``: the first of the ``--pg-config``
option (``python setup.py build_ext --pg-config=/path/to/pg_config``), the
``PG_CONFIG`` environment variable, or ``pg_config`` on the PATH.
"""

import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

SOURCES = [
    "src/module.c",
    "src/connection_type.c",
    "src/reader_type.c",
    "src/message_type.c",
    "src/pqpath.c",
    "src/wire.c",
    "src/change_type.c",
    "src/convert.c",
    "src/convert_json.c",
    "src/encode_json.c",
    "src/decode_test_decoding.c",
    "src/decode_pgoutput.c",
    "src/snapshot_type.c",
    "src/aiter_type.c",
]
HEADERS = [
    "src/pld.h",
    "src/connection.h",
    "src/reader.h",
    "src/message.h",
    "src/pqpath.h",
    "src/wire.h",
    "src/change.h",
    "src/convert.h",
    "src/decode.h",
    "src/snapshot.h",
    "src/aiter.h",
]


def read_version():
    with open(os.path.join(HERE, "pylogicaldecoding", "_version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


class PgConfigError(Exception):
    pass


def find_pg_config(explicit=None):
    candidates = [explicit, os.environ.get("PG_CONFIG"), shutil.which("pg_config")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise PgConfigError(
        "pg_config not found: pylogicaldecoding needs libpq and its headers.\n"
        "Install them (Debian/Ubuntu: apt-get install libpq-dev; Fedora/RHEL: "
        "dnf install libpq-devel; macOS: brew install libpq) and make sure "
        "pg_config is on the PATH, or pass --pg-config=/path/to/pg_config to "
        "build_ext, or set the PG_CONFIG environment variable."
    )


def pg_config(exe, what):
    out = subprocess.check_output([exe, "--" + what])
    return out.decode("utf-8").strip()


class BuildExt(build_ext):
    user_options = build_ext.user_options + [
        ("pg-config=", None, "path to the pg_config executable"),
    ]

    def initialize_options(self):
        build_ext.initialize_options(self)
        self.pg_config = None

    def finalize_options(self):
        build_ext.finalize_options(self)
        try:
            exe = find_pg_config(self.pg_config)
        except PgConfigError as e:
            sys.exit(str(e))
        includedir = pg_config(exe, "includedir")
        libdir = pg_config(exe, "libdir")
        pgversion = pg_config(exe, "version")
        for ext in self.extensions:
            ext.include_dirs.append(includedir)
            ext.library_dirs.append(libdir)
            if sys.platform != "darwin":
                ext.runtime_library_dirs.append(libdir)
            ext.define_macros.append(
                ("PLD_LIBPQ_BUILT_WITH", '"%s"' % pgversion.replace('"', "")))
        extra = os.environ.get("PLD_CFLAGS")
        if extra:  # e.g. sanitizer builds: see INSTALL.md
            for ext in self.extensions:
                ext.extra_compile_args.extend(extra.split())
                ext.extra_link_args.extend(extra.split())


core = Extension(
    "pylogicaldecoding._core",
    sources=SOURCES,
    depends=HEADERS,
    libraries=["pq"],
    define_macros=[("PLD_VERSION", '"%s"' % read_version())],
    extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers", "-std=c99",
                        "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE"],
)

setup(ext_modules=[core], cmdclass={"build_ext": BuildExt})
