"""A puncturable pseudorandom function: the GGM tree, kept as the set of nodes still known.

A tree of depth :data:`DEPTH` has a random 32-byte root; a node's children are
``SHA-256(label || bit || node)`` for ``bit`` 0 and 1 (SHA-256 as the length-doubling PRG of
Goldreich, Goldwasser & Micali, "How to construct random functions", J. ACM 33(4), 792-807,
1986), and leaf ``i`` is the node reached by the bits of ``i``, most significant first.

*Puncturing* leaf ``i`` replaces the known node above it by the siblings of the path below that
node (Boneh & Waters, "Constrained pseudorandom functions and their applications", ASIACRYPT
2013, section 3.1; Sahai & Waters, STOC 2014): every other leaf stays derivable, and leaf ``i``
is not derivable from what remains without inverting SHA-256. Green & Miers ("Forward secure
asynchronous messaging from puncturable encryption", IEEE S&P 2015) use the same idea for
forward secrecy. The KMS keeps a reserved key sealed under its leaf key, so erasing the key
costs a small non-durable write (the frontier's change), and creating it costs nothing durable
at all: the root was made durable once, before its first leaf was used.

The frontier holds ``O(DEPTH)`` nodes when leaves are punctured in the order they were
handed out, and at most ``DEPTH`` per outstanding leaf otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

DEPTH = 20
"""Levels below a root: one tree gives ``2**DEPTH`` leaves (a reserved key each)."""

LEAVES = 1 << DEPTH
_LABEL = b"qdnet-kms reserved-key tree v1"
_ZERO, _ONE = _LABEL + b"\x00", _LABEL + b"\x01"

Node = tuple[int, int, int]
"""``(tree, depth, index)``: a node of a tree; depth 0 is the root, depth DEPTH a leaf."""

Leaf = tuple[int, int]
"""``(tree, leaf index)``"""


def child(node_key: bytes, bit: int) -> bytes:
    """The left (``bit`` 0) or right (1) child's key: GGM's PRG, one half of it."""
    return hashlib.sha256((_ONE if bit else _ZERO) + node_key).digest()


def descend(node_key: bytes, depth: int, leaf: int) -> bytes:
    """The key of ``leaf`` below the node at ``depth`` on its path."""
    key = node_key
    for level in range(depth + 1, DEPTH + 1):
        key = child(key, (leaf >> (DEPTH - level)) & 1)
    return key


@dataclass
class Frontier:
    """The known nodes of some trees (``nodes``), with the derivation and puncturing rules.

    A node in ``nodes`` stands for every leaf below it; no two known nodes overlap.
    """

    nodes: dict[Node, bytes] = field(default_factory=dict, repr=False)
    _path: tuple[Node, int, list[bytes]] | None = field(default=None, init=False, repr=False)
    """The keys on the path from a known node to the last leaf :meth:`next_leaf_key` gave."""

    def ancestor(self, leaf: Leaf) -> Node | None:
        """The known node above ``leaf`` (the leaf itself included), or None: punctured."""
        tree, i = leaf
        for depth in range(DEPTH, -1, -1):
            node = (tree, depth, i >> (DEPTH - depth))
            if node in self.nodes:
                return node
        return None

    def leaf_key(self, leaf: Leaf) -> bytes | None:
        """The key of ``leaf``, or None if it was punctured (or its tree is unknown here)."""
        node = self.ancestor(leaf)
        if node is None:
            return None
        return descend(self.nodes[node], node[1], leaf[1])

    def next_leaf_key(self, leaf: Leaf) -> bytes | None:
        """As :meth:`leaf_key`, reusing the path of the previous call where the two paths
        meet: about 2 hashes a leaf instead of ``DEPTH`` when leaves are taken in order."""
        node = self.ancestor(leaf)
        if node is None:
            return None
        memo = self._path
        if memo is not None and memo[0] == node and memo[2][0] == self.nodes[node]:
            meet = DEPTH - (leaf[1] ^ memo[1]).bit_length()  # depth where the paths part
            path = memo[2][: meet - node[1] + 1]
        else:
            path = [self.nodes[node]]
        for level in range(node[1] + len(path), DEPTH + 1):
            path.append(child(path[-1], (leaf[1] >> (DEPTH - level)) & 1))
        self._path = (node, leaf[1], path)
        return path[-1]

    def puncture(self, leaves: list[Leaf]) -> tuple[dict[Node, bytes], dict[Node, bytes]]:
        """Forget ``leaves`` (already punctured ones are skipped); returns what changed:
        the nodes removed and the nodes added (a node both added and removed here is in
        neither), for the caller to store or to :meth:`undo`."""
        removed: dict[Node, bytes] = {}
        added: dict[Node, bytes] = {}
        for tree, i in leaves:
            node = self.ancestor((tree, i))
            if node is None:
                continue
            key = self.nodes.pop(node)
            if node in added:
                del added[node]
            else:
                removed[node] = key
            for level in range(node[1] + 1, DEPTH + 1):
                bit = (i >> (DEPTH - level)) & 1
                sibling = (tree, level, (i >> (DEPTH - level)) ^ 1)
                self.nodes[sibling] = added[sibling] = child(key, bit ^ 1)
                key = child(key, bit)
        return removed, added

    def undo(self, removed: dict[Node, bytes], added: dict[Node, bytes]) -> None:
        """Take back a :meth:`puncture` whose changes could not be stored."""
        for node in added:
            self.nodes.pop(node, None)
        self.nodes.update(removed)

    def restrict(
        self, tree: int, keep: set[int]
    ) -> tuple[dict[Node, bytes], dict[Node, bytes], set[int]]:
        """Puncture every leaf of ``tree`` but ``keep``: the tree's nodes become the leaf keys
        of ``keep``. Returns the nodes removed and added (as :meth:`puncture`) and the leaves
        of ``keep`` already punctured.
        """
        kept: dict[Node, bytes] = {}
        lost: set[int] = set()
        for i in keep:
            key = self.leaf_key((tree, i))
            if key is None:
                lost.add(i)
            else:
                kept[(tree, DEPTH, i)] = key
        old = {n: k for n, k in self.nodes.items() if n[0] == tree}
        for n in old:
            del self.nodes[n]
        self.nodes.update(kept)
        removed = {n: k for n, k in old.items() if n not in kept}
        added = {n: k for n, k in kept.items() if n not in old}
        return removed, added, lost
