"""Traffic routing for the serving ingress: which live model version answers a request, and
whether the request is also mirrored to a shadow version.

Each live version has an integer weight (0..100, summing to 100). A version at weight 0 is
deployed but idle: it never gets traffic. A request that carries a sticky key (an entity id)
always goes to the same version while the weights stand; a request without one is routed at
random by weight.

Sticky keys use weighted rendezvous hashing (highest random weight): for each version ``v``
with weight ``w > 0``, ``h`` is a uniform number in (0, 1) drawn from a 64-bit BLAKE2b hash of
``(key, v)``, the version's score is ``-w / ln(h)``, and the highest score wins. Why this and not
a hash ring or a bucket table:

* Minimal movement on a weight change. A version's score only scales with its own weight, so
  when weights move from 90/10 to 80/20 the only keys that move are the ~10% that go from the
  shrinking version to the growing one, and adding a version at weight ``w`` moves ~``w``% of
  keys, all of them to the new version (a customer is not bounced between old versions during
  a canary). A version at weight 0 has no score and never wins a key.
* No ring to rebuild. The router is just the weight table; changing a weight is building a new
  ``Router``, with no virtual nodes to place and nothing to migrate.
* Stable across replicas and processes with no shared state: the hash is BLAKE2b over the key
  and the version name (never Python's salted ``hash()``), so every ingress replica, in any
  process, on any host, sends a key to the same version without coordinating.

``tests/unit/test_routing.py`` checks these properties on 10,000 keys (``customer-{i}``): the
share per version within 1.5 points of its weight, the same answers from a second router and a
second process, 90/10 -> 80/20 moving ~10% of keys and only from "3" to "4", a third version at
weight 10 taking ~10% of keys and every moved key going to it, and no key ever on a weight-0
version.

``choose`` runs on every HTTP request, so everything that does not depend on the key (the
per-version hash prefixes, the cumulative weights for keyless requests) is computed once in
``Router.__init__``.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Mapping
from hashlib import blake2b

__all__ = ["Router"]

_TOTAL = 100
# Uniform numbers are built from the top 53 bits of a 64-bit hash (a double's mantissa), offset by
# half a step so that they are never exactly 0 or 1: ln(h) is finite and never 0.
_SHIFT = 64 - 53
_SCALE = 1.0 / (1 << 53)
# Separate personalisations, so that the shadow sample of a key is independent of its route.
_ROUTE_PERSON = b"mlp-route"
_SHADOW_PERSON = b"mlp-shadow"


def _version_hasher(version: str) -> blake2b:
    """A BLAKE2b state primed with the version name, length-prefixed so that (key, version) pairs
    never collide as byte strings ("ab" + "c" vs "a" + "bc")."""
    name = version.encode("utf-8")
    return blake2b(len(name).to_bytes(4, "big") + name, digest_size=8, person=_ROUTE_PERSON)


def _unit(digest: bytes) -> float:
    """A 64-bit digest as a uniform float strictly inside (0, 1)."""
    return ((int.from_bytes(digest, "big") >> _SHIFT) + 0.5) * _SCALE


def _check_version_name(field: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{field} must be a non-empty version name (str), got {name!r}")
    return name


class Router:
    """Routes requests across live model versions by weight, sticky per key.

    ``weights`` maps version -> integer weight (0..100, summing to exactly 100, at least one
    positive). ``shadow`` is a version that requests are mirrored to (it need not have a weight;
    it gets live traffic from ``choose`` only if it also has a positive weight), and
    ``shadow_fraction`` in (0, 1] is the share of requests mirrored. A router is immutable: to
    change the weights, build a new one.
    """

    __slots__ = ("_weights", "_versions", "_ranked", "_only", "_cumulative", "_chosen",
                 "_shadow", "_shadow_fraction", "_shadow_always")

    def __init__(self, weights: Mapping[str, int], shadow: str | None = None,
                 shadow_fraction: float = 1.0) -> None:
        if not isinstance(weights, Mapping):
            raise ValueError(f"weights must be a mapping of version -> int weight, got {weights!r}")
        clean: dict[str, int] = {}
        for version, weight in weights.items():
            _check_version_name("weights: version", version)
            # bool is an int subclass: True is not a weight.
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= _TOTAL:
                raise ValueError(f"weights[{version!r}] must be an int in 0..{_TOTAL}, got {weight!r}")
            clean[version] = weight
        if not any(clean.values()):
            raise ValueError(f"weights must give at least one version a positive weight, got {clean!r}")
        total = sum(clean.values())
        if total != _TOTAL:
            raise ValueError(f"weights must sum to exactly {_TOTAL}, got {total} in {clean!r}")
        if shadow is not None:
            _check_version_name("shadow", shadow)
        if (isinstance(shadow_fraction, bool) or not isinstance(shadow_fraction, int | float)
                or not 0.0 < shadow_fraction <= 1.0):  # also rejects NaN
            raise ValueError(f"shadow_fraction must be a number in (0, 1], got {shadow_fraction!r}")

        self._weights = clean
        versions = list(clean)
        if shadow is not None and shadow not in clean:
            versions.append(shadow)
        self._versions = tuple(versions)
        # Only positive weights take part; sorted by name so ties (never seen with 53-bit hashes)
        # break the same way whatever order the mapping came in.
        live = sorted(v for v, w in clean.items() if w > 0)
        self._ranked = tuple((v, _version_hasher(v), float(clean[v])) for v in live)
        self._only = live[0] if len(live) == 1 else None
        cumulative, running = [], 0
        for v in live:
            running += clean[v]
            cumulative.append(running / _TOTAL)
        self._cumulative = tuple(cumulative)
        self._chosen = tuple(live)
        self._shadow = shadow
        self._shadow_fraction = float(shadow_fraction)
        self._shadow_always = shadow_fraction >= 1.0

    @property
    def weights(self) -> dict[str, int]:
        """The weight table, weight-0 versions included (a copy)."""
        return dict(self._weights)

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version the router knows: all weighted ones (weight 0 included), then the shadow
        if it has no weight entry."""
        return self._versions

    def choose(self, key: str | None) -> str:
        """The version that serves this request. With a key (any str, "" included): the same
        version every time while the weights stand, on every replica. Without (None): a random
        version by weight."""
        if self._only is not None:
            return self._only
        if key is None:
            return self._chosen[bisect_right(self._cumulative, random.random())]
        data = key.encode("utf-8")
        best, best_score = "", -1.0
        log = math.log
        for version, prefix, weight in self._ranked:
            hasher = prefix.copy()
            hasher.update(data)
            score = -weight / log(_unit(hasher.digest()))
            if score > best_score:
                best, best_score = version, score
        return best

    def shadow_for(self, key: str | None) -> str | None:
        """The shadow version if this request is to be mirrored, else None. With a key, the same
        answer every time for that key (a hash of the key, independent of its route); without,
        random. The caller skips the mirror when it equals the version ``choose`` picked (a shadow
        that also has live weight)."""
        if self._shadow is None:
            return None
        if self._shadow_always:
            return self._shadow
        if key is None:
            u = random.random()
        else:
            u = _unit(blake2b(key.encode("utf-8"), digest_size=8, person=_SHADOW_PERSON).digest())
        return self._shadow if u < self._shadow_fraction else None

    def __repr__(self) -> str:
        if self._shadow is None:
            return f"Router({self._weights!r})"
        return (f"Router({self._weights!r}, shadow={self._shadow!r}, "
                f"shadow_fraction={self._shadow_fraction!r})")
