"""A Griffe extension for the API reference: each dataclass field's `metadata["help"]` becomes its
attribute's docstring, and its default value its value, so a setting's help is written once (in
`Config`) and shown everywhere, and the signature shows defaults rather than `setting(...)`
calls."""

from __future__ import annotations

import dataclasses
from typing import Any

import griffe


class FieldHelp(griffe.Extension):
    """Sets the docstring of every field of a dataclass that carries a help text."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        try:
            runtime = griffe.dynamic_import(cls.path)
        except ImportError:
            return
        if not dataclasses.is_dataclass(runtime):
            return
        for field in dataclasses.fields(runtime):
            help = field.metadata.get("help")
            if help and field.name in cls.members:
                member = cls.members[field.name]
                member.docstring = griffe.Docstring(help, parent=member)
                member.value = repr(field.default)
