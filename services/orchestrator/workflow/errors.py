"""Workflow definition errors: every issue with its JSON-pointer path and source position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.kit.errors import FailedPrecondition
from supportmesh.common.v1 import errors_pb2

IssueCode = Literal[
    "yaml",
    "schema",
    "duplicate",
    "tool_unknown",
    "expression",
    "reference",
    "unreachable",
    "compensation",
]


@dataclass(frozen=True)
class Issue:
    """One problem in a workflow file, located by JSON pointer and 1-based line and column."""

    path: str
    line: int
    column: int
    message: str
    code: IssueCode = "schema"

    def __str__(self) -> str:
        """``line:column: path: message``, the form editors and CI logs understand."""
        return f"{self.line}:{self.column}: {self.path or '/'}: {self.message}"


class WorkflowError(FailedPrecondition):
    """A workflow that cannot run: FAILED_PRECONDITION, WORKFLOW_INVALID or TOOL_UNKNOWN."""

    # A kit DomainError, so the error interceptor maps it to google.rpc.Status + ErrorInfo
    # as is. TOOL_UNKNOWN only when unknown tools are the sole problem: that is fixed in the
    # tool registry, not in the file.

    def __init__(self, issues: Sequence[Issue], *, source: str = "<workflow>") -> None:
        """Sort the issues by position and build the message and ErrorInfo metadata."""
        if not issues:
            raise ValueError("a WorkflowError needs at least one issue")
        self.issues = tuple(sorted(issues, key=lambda i: (i.line, i.column, i.path, i.message)))
        self.source = source
        first = self.issues[0]
        only_tools = all(issue.code == "tool_unknown" for issue in self.issues)
        reason = (
            errors_pb2.ERROR_REASON_TOOL_UNKNOWN
            if only_tools
            else errors_pb2.ERROR_REASON_WORKFLOW_INVALID
        )
        text = "\n".join(f"{source}:{issue}" for issue in self.issues)
        super().__init__(
            text,
            reason=reason,
            metadata={
                "source": source,
                "path": first.path or "/",
                "line": str(first.line),
                "column": str(first.column),
                "issues": str(len(self.issues)),
            },
        )

    def __str__(self) -> str:
        """Every issue on its own line, prefixed with the source name."""
        return self.message
