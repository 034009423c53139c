"""Debian version strings compared as dpkg compares them (pure).

The algorithm is the one deb-version(7) describes: ``[epoch:]upstream[-revision]``; epochs
compare as numbers; upstream and revision alternate non-digit and digit runs, non-digit runs
compared character by character where ``~`` sorts before everything (even the end of the
string), letters before other characters, and digit runs compared as numbers.
"""

from __future__ import annotations

import functools
import re


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """Compare an upstream version or a revision (deb-version(7), "Sorting algorithm")."""
    while a or b:
        a_text = re.match(r"[^0-9]*", a)
        b_text = re.match(r"[^0-9]*", b)
        at, bt = (a_text.group() if a_text else ""), (b_text.group() if b_text else "")
        a, b = a[len(at):], b[len(bt):]
        for i in range(max(len(at), len(bt))):
            ac = _order(at[i]) if i < len(at) else 0
            bc = _order(bt[i]) if i < len(bt) else 0
            if ac != bc:
                return -1 if ac < bc else 1
        a_num = re.match(r"[0-9]*", a)
        b_num = re.match(r"[0-9]*", b)
        an, bn = (a_num.group() if a_num else ""), (b_num.group() if b_num else "")
        a, b = a[len(an):], b[len(bn):]
        if int(an or 0) != int(bn or 0):
            return -1 if int(an or 0) < int(bn or 0) else 1
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return int(epoch or 0), upstream, revision


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, equal to or after ``b`` (``dpkg --compare-versions``)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


sort_key = functools.cmp_to_key(compare)


def upstream(version: str) -> str:
    """The upstream part of a Debian version: ``6.12.118-1~deb12u1`` → ``6.12.118``."""
    return _split(version)[1]
