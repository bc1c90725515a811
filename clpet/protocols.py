"""Protocols: the declared type of a stream, and which methods may run on it (docs/architecture.md, "Protocols").

A scenario builder declares the protocol of the streams it builds (``ScenarioBuilder.protocol``); a method declares
the protocols it supports (``Method.protocols``), as mammoth's ``COMPATIBILITY`` lists do. ``check_pair`` compares
the two before any data or model is loaded, so an unsupported pairing costs one line, not a crashed run.

The protocol also says whether the task id reaches prediction: class-incremental streams never give it;
task-incremental streams give it at training time, and at evaluation time only when the scenario says so
(``Scenario.task_id_at_eval``; the O-LoRA and MIGU protocols score without it).
"""
from __future__ import annotations

from enum import Enum
from typing import Iterable, Tuple


class Protocol(str, Enum):
    """The protocol of a stream. A ``str`` enum: ``Protocol.CLASS_INCREMENTAL == "class-incremental"``."""

    CLASS_INCREMENTAL = "class-incremental"
    FEW_SHOT_CLASS_INCREMENTAL = "few-shot-class-incremental"
    TASK_INCREMENTAL = "task-incremental"
    SINGLE_STREAM = "single-stream"  # one training set, deletion requests against it (unlearning)

    def __str__(self) -> str:  # "class-incremental", not "Protocol.CLASS_INCREMENTAL"
        return self.value

    @classmethod
    def parse(cls, value: "str | Protocol") -> "Protocol":
        """The protocol named ``value``; ValueError listing the valid names otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown protocol '{value}'; valid: {', '.join(p.value for p in cls)}") from None


CLASS_PROTOCOLS: Tuple[Protocol, ...] = (Protocol.CLASS_INCREMENTAL, Protocol.FEW_SHOT_CLASS_INCREMENTAL)


def check_pair(method_name: str, supported: Iterable[Protocol], scenario_name: str, protocol: Protocol) -> None:
    """ValueError (one line) when a method does not declare the scenario's protocol."""
    supported = tuple(Protocol.parse(p) for p in supported)
    if Protocol.parse(protocol) not in supported:
        raise ValueError(
            f"method '{method_name}' supports {', '.join(p.value for p in supported)}; scenario '{scenario_name}' "
            f"is {Protocol.parse(protocol).value}"
        )
