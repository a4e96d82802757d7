"""Alias and approval methods shared by the parts whose entries live on the registry's rows.

Prompts (:class:`keel.llm.Prompts`) and RAG indexes (:class:`keel.llm.rag.RagIndexes`)
are registry rows of their own kind, so their aliases move, keep history and
need approvals through the very code that moves a model's. A part mixes in
:class:`AliasesOnRows` and sets ``_rows`` to a :class:`RegistryClient` of its
kind; each method is that client's, scoped to the kind's rows.
"""

from __future__ import annotations

import builtins

from keel.registry.client import UNSET, RegistryClient, Unset
from keel.registry.entities import AliasChange, Approval

__all__ = ["AliasesOnRows"]


class AliasesOnRows:
    """Aliases and approvals of one registry kind, through ``self._rows``."""

    _rows: RegistryClient

    def get_alias(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, or ``None``."""
        return self._rows.get_alias(name, alias)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
    ) -> AliasChange:
        """Point ``alias`` at ``version`` as a compare-and-set (see ``RegistryClient.set_alias``).

        Raises:
            ApprovalRequired: the alias is protected and ``version`` lacks approvals.
            Conflict: the alias moved since ``expected``.
        """
        return self._rows.set_alias(name, alias, version, expected=expected, comment=comment)

    def delete_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
    ) -> AliasChange:
        """Remove an alias (compare-and-set like :meth:`set_alias`)."""
        return self._rows.delete_alias(name, alias, expected=expected, comment=comment)

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasChange]:
        """Every move of the entry's aliases (or of one alias), oldest first."""
        return self._rows.alias_history(name, alias)

    def approve(self, name: str, version: int, alias: str, comment: str | None = None) -> Approval:
        """Approve ``version`` for the protected ``alias`` as the current user.

        Raises:
            InvalidInput: the alias is not protected.
            PermissionDenied: the user lacks the policy's role, or registered the version.
            Conflict: the user already approved it.
        """
        return self._rows.approve(name, version, alias, comment)

    def list_approvals(self, name: str, version: int | None = None) -> builtins.list[Approval]:
        """Approvals of the entry's versions (or of one version), oldest first."""
        return self._rows.list_approvals(name, version)
