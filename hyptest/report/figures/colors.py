"""Colours of the report's figures: one fixed colour per method, shades per method family.

Known methods get fixed Okabe–Ito colours (colour-blind safe); others get the
next unused colour; the members of a grid family (``"sgd@lr=0.0003"``) share
their family's hue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["PALETTE", "EXTRA_COLORS", "method_colors", "shade", "method_family", "family_colors"]

#: Fixed colours for the known methods (Okabe–Ito, colour-blind safe).
PALETTE: dict[str, str] = {
    "icl": "#D55E00",  # vermillion
    "gd": "#0072B2",  # blue
    "sgd": "#009E73",  # bluish green
    "adam": "#CC79A7",  # reddish purple
    "zs": "#7F7F7F",  # grey: the no-demo baseline
}

#: Colours handed out, in order, to methods not in :data:`PALETTE`.
EXTRA_COLORS: tuple[str, ...] = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#8C6D31",  # brown
    "#666666",  # grey
    "#F0E442",  # yellow
    "#000000",  # black
)

def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Assign a consistent colour to each method.

    Parameters
    ----------
    methods : iterable of str
        Method names, in display order.

    Returns
    -------
    dict of str to str
        Colour (``#RRGGBB``) per method.  Known methods (``icl``, ``gd``,
        ``sgd``, ``adam``) always get their fixed :data:`PALETTE` colour;
        unknown methods get the next unused colour of :data:`EXTRA_COLORS`
        (cycling if there are more methods than colours).
    """
    out: dict[str, str] = {}
    k = 0
    for m in methods:
        if m in out:
            continue
        key = str(m).lower()
        if key in PALETTE:
            out[m] = PALETTE[key]
        else:
            out[m] = EXTRA_COLORS[k % len(EXTRA_COLORS)]
            k += 1
    return out


def shade(color: str, amount: float) -> str:
    """Lighten (``amount > 0``) or darken (``amount < 0``) a ``#RRGGBB`` colour.

    Parameters
    ----------
    color : str
        Colour as ``#RRGGBB``; anything else is returned unchanged.
    amount : float
        In ``[-1, 1]``: the share of the way towards white (positive) or
        black (negative).

    Returns
    -------
    str
        The mixed colour as ``#RRGGBB`` (lower case).
    """
    c = str(color)
    if len(c) != 7 or not c.startswith("#"):
        return c
    try:
        rgb = [int(c[i : i + 2], 16) for i in (1, 3, 5)]
    except ValueError:
        return c
    a = max(-1.0, min(1.0, float(amount)))
    target = 255 if a > 0 else 0
    mixed = [round(v + (target - v) * abs(a)) for v in rgb]
    return "#" + "".join(f"{v:02x}" for v in mixed)


def method_family(method: str) -> str:
    """Family of a method name: the part before ``"@"`` (``"sgd@lr=0.0003"`` -> ``"sgd"``)."""
    return str(method).split("@", 1)[0]


def family_colors(methods: Iterable[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Colour per method, where the members of one grid family share a hue.

    Parameters
    ----------
    methods : iterable of str
        Method names in display order.  A grid member is named
        ``"<family>@<setting>"`` (e.g. ``"sgd@lr=0.0003"``).
    base : mapping of str to str, optional
        Colours already assigned (the report's :func:`method_colors`); a
        method found here keeps its colour, and a family found here lends its
        colour to its members.

    Returns
    -------
    dict of str to str
        Colour per method.  A family's colour comes from ``base``, else from
        :func:`method_colors` over the families.  A family with one member
        gets the family colour itself; with several, members (in display
        order) run from darker to lighter shades of it (the bare family name,
        when it is a member, keeps the pure colour).
    """
    base = dict(base or {})
    methods = list(dict.fromkeys(str(m) for m in methods))
    families = list(dict.fromkeys(method_family(m) for m in methods))
    fam_cols = {**method_colors(families), **{f: base[f] for f in families if f in base}}
    out: dict[str, str] = {}
    for fam in families:
        members = [m for m in methods if method_family(m) == fam and m not in base]
        grid = [m for m in members if m != fam]
        if fam in members:
            out[fam] = fam_cols[fam]
        if len(grid) == 1 and fam not in members:
            out[grid[0]] = fam_cols[fam]
        elif grid:
            k = len(grid)
            for i, m in enumerate(grid):
                amount = -0.35 + 0.9 * i / (k - 1) if k > 1 else 0.0
                out[m] = shade(fam_cols[fam], amount)
    out.update({m: base[m] for m in methods if m in base})
    return out
