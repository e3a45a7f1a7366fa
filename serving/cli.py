"""``qtha-serve``: the OpenAI-compatible API and the chat page over frozen adapters.

  qtha-serve --adapter counseling=runs/demo/counseling-qtha/artifact --adapter math=runs/demo/math-qtha/artifact
  QTHA_API_KEYS=key1,key2 qtha-serve --host 0.0.0.0 --port 8000 --adapter ...

Every artifact is verified before the server starts: a tampered artifact, or one made for another
base model, is refused with the reason. Without QTHA_API_KEYS the server listens on loopback only.
Other settings come from QTHA_* environment variables (see serving/settings.py) or --config FILE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_adapter(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=ARTIFACT_DIR; got {text!r}")
    return name.strip(), path.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qtha-serve",
        description=(__doc__ or "").split("\n\n")[0],
        epilog=(__doc__ or "").split("\n", 2)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="base model (default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--adapter",
        action="append",
        type=_parse_adapter,
        default=[],
        metavar="NAME=ARTIFACT",
        help="a frozen artifact to serve under NAME (repeatable)",
    )
    p.add_argument(
        "--host", default=None, help="interface (default 127.0.0.1; loopback only without API keys)"
    )
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument(
        "--config",
        default=None,
        help="JSON or YAML file with settings (same keys as QTHA_* variables, lower case)",
    )
    p.add_argument("--no-ui", dest="no_ui", action="store_true", help="serve the API only, no chat page")
    return p


def _config_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config: file not found: {file}")
    text = file.read_text()
    if file.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"--config {file}: expected a mapping of settings")
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from quantum_adapters.artifact import verify

        from .app import build_service, create_app
        from .settings import Settings

        overrides = _config_file(args.config) if args.config else {}
        overrides.update({k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None})
        settings = Settings.from_env(**overrides)
        adapters = dict(args.adapter)
        if len(adapters) != len(args.adapter):
            raise ValueError("--adapter: each NAME may be used once")
        for path in adapters.values():
            verify(path)  # fail before loading anything
        host, warning = settings.bind_host()
        if warning:
            print(f"qtha-serve: {warning}", file=sys.stderr)
        print(f"qtha-serve: loading {args.model} and {len(adapters)} adapter(s)...", file=sys.stderr)
        service = build_service(args.model, adapters, settings)
        app = create_app(settings, service=service, ui=not args.no_ui)
    except (ValueError, OSError, KeyError) as exc:
        print(f"qtha-serve: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"qtha-serve: chat page http://{host}:{settings.port}/ui   API http://{host}:{settings.port}/v1",
        file=sys.stderr,
    )
    uvicorn.run(app, host=host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
