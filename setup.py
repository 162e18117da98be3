"""Builds bpstream's two native pieces and puts them side by side in the package:

    bpstream/libbpstream.so       the Swift core behind the C ABI (swift build, release)
    bpstream/_bpstream.*.so       the CPython extension, linked to it with RUNPATH $ORIGIN

so the installed package works from any directory with no LD_LIBRARY_PATH.
Set BPSTREAM_SANITIZE=1 to build the extension with AddressSanitizer/UBSan (tests only).
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
HEADER_DIR = os.path.join(ROOT, "Sources", "CBPStream", "include")
LIBRARY = "libbpstream.so"


def swift_build() -> str:
    """Builds libbpstream.so (release); returns the folder it is in."""
    command = ["swift", "build", "-c", "release", "--product", "bpstream"]
    print("bpstream: " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    bin_path = subprocess.run(
        command + ["--show-bin-path"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    return bin_path


class BuildWithSwift(build_ext):
    def run(self) -> None:
        swift_dir = swift_build()
        for ext in self.extensions:
            ext.library_dirs.append(swift_dir)
        super().run()
        # The extension's RUNPATH is $ORIGIN: put the library next to it.
        target_dir = os.path.dirname(self.get_ext_fullpath("bpstream._bpstream"))
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, LIBRARY)
        shutil.copyfile(os.path.join(swift_dir, LIBRARY), target)
        if shutil.which("strip"):
            subprocess.run(["strip", "--strip-unneeded", target], check=True)
        # The headers (bpstream.get_include()) ship as package data: python/bpstream/include
        # holds bpstream_capi.h and a symlink to the one ABI header.


# -fvisibility=hidden: the .so exports PyInit__bpstream only. The extension's files share
# internals (set_error, do_put, take_next, ...); hidden, no same-named symbol of another
# library can interpose on them, and the calls between the files are direct, not via the PLT.
compile_args = ["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                "-fvisibility=hidden"]
link_args = ["-Wl,-rpath,$ORIGIN"]
if os.environ.get("BPSTREAM_SANITIZE"):
    compile_args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += ["-fsanitize=address,undefined"]

setup(
    ext_modules=[
        Extension(
            "bpstream._bpstream",
            sources=[f"python/bpstream/{name}.c" for name in (
                "_module", "_errors", "_args", "_stream", "_queue", "_readahead", "_aio", "_capi",
                "_clock", "_admission", "_rate", "_limiter",
            )],
            # setuptools rebuilds only when these change too: the extension's own headers.
            depends=["python/bpstream/_bpstream.h", "python/bpstream/_readahead.h",
                     "python/bpstream/include/bpstream_capi.h",
                     os.path.join(HEADER_DIR, "bpstream.h")],
            include_dirs=[HEADER_DIR, os.path.join(ROOT, "python", "bpstream", "include")],
            libraries=["bpstream"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ],
    cmdclass={"build_ext": BuildWithSwift},
)
