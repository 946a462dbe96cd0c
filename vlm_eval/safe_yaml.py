"""YAML for files a user hands us: size, alias-expansion and depth limits, no duplicate keys.

A 465-byte file of nested aliases ("billion laughs") expands to a billion nodes once
anything walks it (pydantic, json.dumps of run.json); deep nesting makes pydantic-core
panic. ``load(text)`` refuses both before anything else sees the data: PyYAML shares
aliased objects while constructing (cheap), then ``check_structure`` walks the result
as a reader would and stops at ``MAX_NODES`` visited or ``MAX_DEPTH`` levels.
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a job file or prompt set is a few KB
MAX_NODES = 100_000  # values visited with aliases expanded
MAX_DEPTH = 32  # a job file nests about 5 levels


class YamlLimitError(yaml.YAMLError, ValueError):
    """The document is too big, too deep, expands too far, or repeats a key."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise YamlLimitError(f"duplicate key {key!r} at line {line} (first given at line "
                                             f"{seen[key]}); give each key once")
                    seen[key] = line
                except TypeError:  # unhashable key: PyYAML refuses it itself
                    continue
        return super().construct_mapping(node, deep)


def check_structure(obj: Any, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Raise YamlLimitError if ``obj`` nests deeper than ``max_depth`` or holds more than
    ``max_nodes`` values counting shared (aliased) objects at every place they appear.
    Iterative and stops early, so checking a bomb costs at most ``max_nodes`` steps."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_nodes:
            raise YamlLimitError(f"the document expands to more than {max_nodes} values (nested aliases?); "
                                 "write it out plainly")
        if depth > max_depth:
            raise YamlLimitError(f"the document nests deeper than {max_depth} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item.keys() if isinstance(k, tuple))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


def _check_event_depth(text: str | bytes, max_depth: int = MAX_DEPTH) -> None:
    """Depth from the event stream (PyYAML's parser is iterative; its composer recurses,
    and would take seconds to hit RecursionError on a 5000-deep document)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > max_depth:
                line = event.start_mark.line + 1
                raise YamlLimitError(f"the document nests deeper than {max_depth} levels (line {line})")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def load(text: str | bytes, *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one YAML document within the limits; YamlLimitError / yaml.YAMLError otherwise."""
    if len(text) > max_bytes:
        raise YamlLimitError(f"the document is {len(text)} bytes, over the {max_bytes}-byte limit")
    _check_event_depth(text)
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check_structure(data)
    return data
