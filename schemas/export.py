"""``bedside schemas export DIR``: one JSON Schema file per topic, for non-Python consumers.

The same files are committed in ``schemas/jsonschema/``; a test keeps them in sync.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bedside.schemas.messages import json_schemas


def render(topic_schema: dict[str, object]) -> str:
    return json.dumps(topic_schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, schema in json_schemas().items():
        path = out_dir / f"{topic}.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    for path in export(args.out):
        print(path)
    return 0
