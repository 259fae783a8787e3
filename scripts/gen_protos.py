#!/usr/bin/env python3
"""Regenerate the committed protobuf modules in hyperdht/messages/.

Usage (from anywhere)::

    python scripts/gen_protos.py           # rewrite *_pb2.py / *_pb2.pyi
    python scripts/gen_protos.py --check   # exit 1 if the committed files are stale

Uses grpcio-tools' bundled protoc (``grpc_tools.protoc``), pinned in
setup.cfg's ``dev`` extra: another grpcio-tools version embeds another
protobuf gencode version, so its output differs from the committed files.

Exit status: 0 up to date / written, 1 committed files differ (``--check``),
2 grpc_tools missing, the wrong version, or protoc failed.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = ROOT / "hyperdht" / "messages"
PROTOS = ("dht_rpc.proto", "peers.proto")
SUFFIXES = ("_pb2.py", "_pb2.pyi")
GRPCIO_TOOLS_VERSION = "1.85.1"  # keep in sync with setup.cfg [options.extras_require] dev


def outputs() -> list[str]:
    """Names of the generated files, relative to hyperdht/messages/."""
    return [p.removesuffix(".proto") + s for p in PROTOS for s in SUFFIXES]


def generate(out_dir: Path) -> None:
    """Run protoc on every .proto, writing <out_dir>/hyperdht/messages/*_pb2.py[i]."""
    from grpc_tools import protoc

    # The include root is the repository, so descriptors are registered as
    # "hyperdht/messages/<name>.proto" and the generated modules name
    # themselves "hyperdht.messages.<name>_pb2".
    args = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(MESSAGES / p) for p in PROTOS),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit status {rc}")


def tool_problem() -> str | None:
    """Why the pinned generator cannot run here, or None if it can."""
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        return f"grpc_tools is not importable (pip install grpcio-tools=={GRPCIO_TOOLS_VERSION})"
    version = metadata.version("grpcio-tools")
    if version != GRPCIO_TOOLS_VERSION:
        return (
            f"grpcio-tools {version} is installed but the committed files were "
            f"generated with {GRPCIO_TOOLS_VERSION}"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and compare with the committed files",
    )
    opts = parser.parse_args(argv)

    problem = tool_problem()
    if problem:
        print(f"gen_protos: {problem}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        try:
            generate(Path(tmp))
        except RuntimeError as exc:
            print(f"gen_protos: {exc}", file=sys.stderr)
            return 2
        gen_dir = Path(tmp) / "hyperdht" / "messages"
        stale = []
        for name in outputs():
            new = (gen_dir / name).read_text(encoding="utf-8")
            target = MESSAGES / name
            old = target.read_text(encoding="utf-8") if target.exists() else None
            if old == new:
                continue
            if opts.check:
                stale.append(name)
                diff = difflib.unified_diff(
                    (old or "").splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"committed/{name}",
                    f"regenerated/{name}",
                )
                sys.stderr.writelines(diff)
            else:
                target.write_text(new, encoding="utf-8")
                print(f"gen_protos: wrote {target.relative_to(ROOT)}")

    if stale:
        print(
            "gen_protos: stale generated files: "
            + ", ".join(stale)
            + " (run: python scripts/gen_protos.py)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
