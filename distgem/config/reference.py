"""The config reference in docs/USAGE.md, generated from distgem/config/sections.py (fields, defaults, docstrings)."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from distgem.config import sections as config_module

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def field_docs() -> dict[str, dict[str, str]]:
    """class name -> field -> the string literal that follows the field in the source."""
    tree = ast.parse(Path(config_module.__file__).read_text())
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = node.body
            for item, after in zip(body, body[1:] + [None]):
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                ):
                    docs.setdefault(node.name, {})[item.target.id] = " ".join(str(after.value.value).split())
    return docs


def reference() -> str:
    docs = field_docs()
    lines = [BEGIN, ""]
    root = config_module.RunConfig()

    def section(prefix: str, instance) -> None:
        cls = type(instance)
        hints = typing.get_type_hints(cls)
        nested = []
        lines.extend([f"### `{prefix}`", "", "| key | type | default | meaning |", "|---|---|---|---|"])
        for field in dataclasses.fields(cls):
            value = getattr(instance, field.name)
            if dataclasses.is_dataclass(value):
                nested.append((f"{prefix}.{field.name}", value))
                continue
            hint = hints[field.name]
            kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            kind = kind.replace("|", "or")
            lines.append(
                f"| `{prefix}.{field.name}` | {kind} | `{value!r}` | {docs.get(cls.__name__, {}).get(field.name, '')} |"
            )
        lines.append("")
        for name, value in nested:
            section(name, value)

    for field in dataclasses.fields(root):
        section(field.name, getattr(root, field.name))
    lines.append(END)
    return "\n".join(lines)


def update(path: Path) -> bool:
    """Rewrite the generated block of `path`; True when it changed."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + reference() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    print("updated" if update(Path(__file__).resolve().parents[2] / "docs" / "USAGE.md") else "up to date")
