"""One drawing: a matplotlib figure laid out in pixels, written as deterministic inline SVG.

Every figure of the report is drawn on a :class:`Sketch`: a
:class:`matplotlib.figure.Figure` (never ``pyplot``'s global state; the SVG
backend only) whose size and placements are given in pixels from the top-left
corner.  :meth:`Sketch.svg` writes it with fixed settings and then rewrites the
SVG for inline use in the report:

* settings: ``svg.fonttype = "none"`` (text stays text), a fixed
  ``svg.hashsalt`` (the ids matplotlib derives from hashes are the same on
  every run), ``text.parse_math = False`` (a ``$`` in a model name is text),
  and no metadata (no date, no creator, no URL);
* the XML prolog, DOCTYPE, ``<metadata>``, the global ``<style>`` element,
  clip paths and matplotlib's own ``id`` attributes are removed (ids that a
  ``<use>`` refers to stay; they are hashes of what they name, so the same id
  always means the same marker), ``xlink:href`` becomes SVG 2's ``href``;
* artists tagged with :meth:`Sketch.tag` get a ``class``, ``data-*``
  attributes and a ``<title>`` child (the browser's tooltip): this is how the
  report's per-point tooltips survive the switch to matplotlib;
* the root gets ``class="hyptest-fig <kind>"``, ``role="img"``, an
  ``aria-label`` and a ``<title>`` with the figure's title.

The same input always gives the same bytes (in any process, whatever
``PYTHONHASHSEED``), so a re-rendered report is identical to the committed one.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import math
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib import cbook
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_mixed import MixedModeRenderer
from matplotlib.backends.backend_svg import FigureCanvasSVG, RendererSVG
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

__all__ = ["SVG_NS", "RC", "Sketch", "add_line", "drawing", "message_svg", "data_range", "finite", "style_axes", "wrap_label",
           "pixel_box"]

#: The SVG namespace; the only URL that appears in generated SVG.
SVG_NS = "http://www.w3.org/2000/svg"
_XLINK = "{http://www.w3.org/1999/xlink}href"
_S = f"{{{SVG_NS}}}"

#: Settings every figure is drawn and written with (passed with ``rc_context``, never set globally).
RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "hyptest-report",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 11,
    "axes.edgecolor": "#444444",
    "axes.linewidth": 0.8,
    "axes.labelcolor": "#222222",
    "axes.labelsize": 11,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlecolor": "#222222",
    "axes.formatter.useoffset": False,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "xtick.labelcolor": "#333333",
    "ytick.labelcolor": "#333333",
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8,
    "legend.fontsize": 10,
    "legend.frameon": False,
}

#: Font stack of the inline SVG: matplotlib measures text with DejaVu Sans, so it comes first.
FONT_FAMILY = "'DejaVu Sans', Verdana, 'Segoe UI', Helvetica, Arial, sans-serif"


def finite(v: object) -> float | None:
    """``float(v)`` when it is a finite number, else None (``bool`` is not a number here)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def data_range(
    values: Iterable[object],
    *,
    include: Iterable[object] = (),
    floor: float | None = None,
    ceiling: float | None = None,
    pad: float = 0.06,
) -> tuple[float, float]:
    """Axis limits that fit the data: the one scale rule of every figure.

    Parameters
    ----------
    values : iterable
        The data drawn on the axis (non-finite values are ignored); a float
        :class:`numpy.ndarray` is reduced in numpy (same limits, much faster).
    include : iterable, optional
        Values the axis must show (a reference line, a null value).
    floor, ceiling : float, optional
        Natural bounds of the quantity (0 for a share or a count, 1 for a
        probability).  The limits never cross them, and a bound closer to the
        data than the data's own span is included (a share of 0.005–0.02
        gets an axis from 0, not from 0.004; one of 0.4–0.6 does not).
    pad : float, optional
        Margin on each side as a share of the span (default 6%).

    Returns
    -------
    (float, float)
        ``lo < hi``; ``(0, 1)`` when there is no finite value.
    """
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind == "f":
        # a float array (a figure's hundreds of thousands of points): its finite values' extremes in numpy, the
        # same numbers as the element-by-element path below; each extreme is its first occurrence (min and max
        # keep the first of equal items: the sign of a zero), and the values come before ``include``
        arr = values[np.isfinite(values)]
        xs = [float(arr[np.argmax(arr == arr.min())]), float(arr[np.argmax(arr == arr.max())])] if arr.size else []
        xs += [f for f in (finite(v) for v in include) if f is not None]
    else:
        xs = [f for f in (finite(v) for v in [*values, *include]) if f is not None]
    if not xs:
        lo, hi = (floor if floor is not None else 0.0), (ceiling if ceiling is not None else 1.0)
        return (lo, hi) if hi > lo else (lo, lo + 1.0)
    lo, hi = min(xs), max(xs)
    span = hi - lo
    if span <= 0:
        span = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - span / 2, hi + span / 2
    snap_lo = floor is not None and lo - floor <= span
    snap_hi = ceiling is not None and ceiling - hi <= span
    a = floor if snap_lo else lo - pad * span
    b = ceiling if snap_hi else hi + pad * span
    if floor is not None:
        a = max(a, floor)  # type: ignore[type-var]
    if ceiling is not None:
        b = min(b, ceiling)  # type: ignore[type-var]
    if snap_lo and not snap_hi:
        b = hi + pad * span
    if snap_hi and not snap_lo:
        a = lo - pad * span
    return (float(a), float(b)) if b > a else (float(a), float(a) + 1.0)


def add_line(ax: Axes, xs: Sequence[float], ys: Sequence[float], **kw: Any) -> Line2D:
    """Add a :class:`~matplotlib.lines.Line2D` to ``ax`` directly (much cheaper than ``ax.plot`` per point)."""
    ln = Line2D(xs, ys, **kw)
    ax.add_line(ln)
    return ln


def style_axes(ax: Axes, *, grid: str | None = "y", frame: bool = False) -> None:
    """The report's look for one axes: light grid under the data, left and bottom spines only.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes.
    grid : {"x", "y", "both"} or None, optional
        Which grid lines to draw (default the horizontal ones).
    frame : bool, optional
        Keep all four spines (a scatter's square frame).
    """
    ax.set_axisbelow(True)
    if grid:
        ax.grid(True, axis=grid)
    for side in ("top", "right"):
        ax.spines[side].set_visible(frame)
    ax.tick_params(length=4, width=0.8, pad=3)


class _Renderer(RendererSVG):
    """matplotlib's SVG renderer, with each line of markers styled once instead of once per marker.

    :meth:`RendererSVG.draw_markers` writes one ``<use>`` per point and asks
    ``_get_style(gc, rgbFace)`` for each of them, with the same arguments for
    the whole line: the style is computed once here and handed back to every
    point (the same text, so the same bytes); a strip plot of thousands of
    points spent most of its drawing time there.
    """

    def draw_markers(self, gc: Any, marker_path: Any, marker_trans: Any, path: Any, trans: Any,
                     rgbFace: Any = None) -> None:
        style = self._get_style(gc, rgbFace)
        self._get_style = lambda *args, **kwargs: style  # type: ignore[method-assign]
        try:
            super().draw_markers(gc, marker_path, marker_trans, path, trans, rgbFace)
        finally:
            del self._get_style


class _Canvas(FigureCanvasSVG):
    """:class:`FigureCanvasSVG` drawing with :class:`_Renderer` (its ``print_svg``, the renderer swapped)."""

    def print_svg(self, filename: Any, *, bbox_inches_restore: Any = None, metadata: Any = None,
                  **ignored: Any) -> None:
        # ``ignored``: dpi, facecolor, edgecolor, orientation, which savefig passes to a canvas outside
        # matplotlib and matplotlib's own print_svg is never given
        with cbook.open_file_cm(filename, "w", encoding="utf-8") as fh:
            if not cbook.file_requires_unicode(fh):
                fh = codecs.getwriter("utf-8")(fh)
            dpi = self.figure.dpi
            self.figure.dpi = 72
            width, height = self.figure.get_size_inches()
            w, h = width * 72, height * 72
            renderer = MixedModeRenderer(self.figure, width, height, dpi,
                                         _Renderer(w, h, fh, image_dpi=dpi, metadata=metadata),
                                         bbox_inches_restore=bbox_inches_restore)
            self.figure.draw(renderer)
            renderer.finalize()


class Sketch:
    """A figure of ``width × height`` pixels, placed in pixels from the top-left corner.

    Parameters
    ----------
    width, height : float
        Size in pixels (the SVG's nominal size and ``viewBox``).

    Notes
    -----
    Create it and draw on it inside ``with matplotlib.rc_context(RC):`` (what
    :func:`hyptest.report.figures.canvas.drawing` does), so that the text is
    measured with the same settings it is written with.
    """

    def __init__(self, width: float, height: float):
        self.width, self.height = float(width), float(height)
        self.fig = Figure(figsize=(self.width / 72.0, self.height / 72.0), dpi=72)
        _Canvas(self.fig)
        self._tags: dict[str, _Tag] = {}

    # -- placement ---------------------------------------------------------
    def fx(self, x: float) -> float:
        """Figure fraction of a pixel x."""
        return x / self.width

    def fy(self, y: float) -> float:
        """Figure fraction of a pixel y counted from the top."""
        return 1.0 - y / self.height

    def axes(self, left: float, top: float, width: float, height: float) -> Axes:
        """An axes whose plotting area spans the given pixel box."""
        return self.fig.add_axes((self.fx(left), self.fy(top + height), width / self.width, height / self.height))

    def text(self, x: float, y: float, s: object, **kw: Any) -> Text:
        """Text at pixel ``(x, y)`` (y of the baseline unless ``va`` says otherwise)."""
        kw.setdefault("va", "baseline")
        return self.fig.text(self.fx(x), self.fy(y), str(s), **kw)

    def line(self, xs: Sequence[float], ys: Sequence[float], **kw: Any) -> Line2D:
        """A polyline in pixel coordinates of the figure."""
        ln = Line2D([self.fx(x) for x in xs], [self.fy(y) for y in ys], transform=self.fig.transFigure, **kw)
        self.fig.add_artist(ln)
        return ln

    def rect(self, x: float, y: float, w: float, h: float, **kw: Any) -> Rectangle:
        """A rectangle in pixel coordinates of the figure (``y`` its top)."""
        r = Rectangle((self.fx(x), self.fy(y + h)), w / self.width, h / self.height,
                      transform=self.fig.transFigure, **kw)
        self.fig.add_artist(r)
        return r

    # -- tags --------------------------------------------------------------
    def tag(self, artist: Artist, cls: str, *, title: str | None = None, wrap: tuple[str, ...] | None = None,
            child_class: str | None = None, children: Sequence[Mapping[str, object]] | None = None,
            **data: object) -> Artist:
        """Give an artist a class, ``data-*`` attributes and a tooltip in the SVG.

        Parameters
        ----------
        artist : matplotlib.artist.Artist
            Any artist (a line, a patch, a text, an axes).
        cls : str
            Its ``class`` attribute.
        title : str, optional
            Text of a ``<title>`` child: the tooltip a browser shows on hover.
        wrap : tuple of str, optional
            ``(class, attribute, value)`` of a ``<g>`` that wraps every artist
            tagged with the same tuple (e.g. the parts of one series).
        child_class : str, optional
            Class given to each marker the artist draws (each point of a line
            of points).
        children : sequence of mapping, optional
            One mapping per marker, in data order: its ``"title"`` (tooltip)
            and ``data-*`` attributes.  Writing the SVG fails if the artist
            drew a different number of markers, so a tooltip never lands on
            another point.
        **data : object
            ``data-<name>`` attributes (``_`` becomes ``-``); None is left out.
        """
        gid = f"hyptest-tag-{len(self._tags)}"
        artist.set_gid(gid)
        attrs = {"class": cls}
        attrs.update({f"data-{k.replace('_', '-')}": str(v) for k, v in data.items() if v is not None})
        kids = None
        if children is not None:
            kids = [{("title" if k == "title" else f"data-{k.replace('_', '-')}"): str(v) for k, v in c.items()
                     if v is not None} for c in children]
        self._tags[gid] = _Tag(attrs, title, child_class, wrap, kids)
        return artist

    # -- output ------------------------------------------------------------
    def svg(self, *, title: str, kind: str) -> str:
        """The figure as an inline ``<svg>`` element (see the module notes).

        Parameters
        ----------
        title : str
            Accessible name: the root's ``<title>`` and ``aria-label``.
        kind : str
            The figure kind, added to the root's class (``hyptest-fig <kind>``).

        Returns
        -------
        str
            One ``<svg>`` element, well-formed XML, no prolog.
        """
        buf = io.StringIO()
        with matplotlib.rc_context(RC):
            self.fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                         "Type": None})
        return _inline(buf.getvalue(), self._tags, title=title, kind=kind, width=self.width, height=self.height)


@contextlib.contextmanager
def drawing(width: float, height: float, title: str | None = None) -> Iterator[Sketch]:
    """A :class:`Sketch` of ``width × height`` pixels drawn under :data:`RC`, its title (if given) centred on top."""
    with matplotlib.rc_context(RC):
        sk = Sketch(width, height)
        if title is not None:  # bold DejaVu Sans is about 0.65 em per character: shrink a long title to fit
            size = min(14.0, max(9.0, (width - 16) / (0.65 * max(len(title), 1))))
            sk.tag(sk.text(width / 2, 22, title, ha="center", fontsize=size, fontweight="bold", color="#222222"),
                   "fig-title")
        yield sk


def wrap_label(label: str, length: float, font_px: float = 11.0) -> str:
    """Break an axis label into lines that fit ``length`` pixels (DejaVu Sans is about 0.6 em per character)."""
    per_line = max(8, int(length / (0.6 * font_px)))
    return "\n".join(textwrap.wrap(str(label), per_line, break_long_words=False)) or str(label)


def message_svg(text: str, *, title: str, kind: str, width: float = 400, height: float = 120) -> str:
    """A figure that only says why there is nothing to draw (with its title on top)."""
    with drawing(width, height, title) as sk:
        sk.tag(sk.text(width / 2, height / 2 + 10, text, ha="center", color="#666666"), "message")
        return sk.svg(title=title, kind=kind)


# --------------------------------------------------------------------------- #
# Rewriting matplotlib's SVG for inline use
# --------------------------------------------------------------------------- #
_WS = re.compile(r"\s+")
_DQ, _SQ = "\ue000", "\ue001"  # placeholders of quotes in text (private-use code points)


@dataclass(frozen=True)
class _Tag:
    """What :meth:`Sketch.tag` asked for one artist."""

    attrs: dict[str, str]
    title: str | None
    child_class: str | None
    wrap: tuple[str, ...] | None
    children: list[dict[str, str]] | None


def _inline(doc: str, tags: dict[str, _Tag], *,
            title: str, kind: str, width: float, height: float) -> str:
    doc = doc.replace(_DQ, "").replace(_SQ, "")
    root = ET.fromstring(doc[doc.index("<svg"):])
    for meta in root.findall(f"{_S}metadata"):
        root.remove(meta)
    referenced: set[str] = set()
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in (f"{_S}clipPath", f"{_S}style"):
                parent.remove(child)
    for el in root.iter():
        el.attrib.pop("clip-path", None)
        href = el.attrib.pop(_XLINK, None)
        if href is not None:
            el.set("href", href)
            referenced.add(href.lstrip("#"))
        if el.tag == f"{_S}text":
            style = el.get("style", "")
            style = re.sub(r"font-family:[^;]*;?\s*", "", style).strip().rstrip(";")
            el.set("style", style)
            tr = el.get("transform", "")
            if tr.startswith("rotate(-0 ") or tr.startswith("rotate(0 "):
                del el.attrib["transform"]
        if el.tag == f"{_S}path" and "d" in el.attrib:
            el.set("d", _WS.sub(" ", el.get("d", "")).strip())
    # tags: class and data-* now; titles and wrapping groups after the clean-up moved elements
    pending: dict[ET.Element, tuple[str | None, tuple[str, ...] | None]] = {}
    for el in list(root.iter()):
        gid = el.get("id")
        if gid is None:
            continue
        if gid in tags:
            tag = tags[gid]
            del el.attrib["id"]
            el.attrib.update(tag.attrs)
            uses = list(el.iter(f"{_S}use"))
            if tag.child_class is not None:
                for d in uses:
                    d.set("class", tag.child_class)
            if tag.children is not None:
                if len(tag.children) != len(uses):
                    raise RuntimeError(f"{len(tag.children)} tooltips for {len(uses)} markers of {tag.attrs}")
                for d, kid in zip(uses, tag.children, strict=True):
                    d.attrib.update({k: v for k, v in kid.items() if k != "title"})
                    if "title" in kid:
                        t = ET.SubElement(d, f"{_S}title")
                        t.text = kid["title"]
            pending[el] = (tag.title, tag.wrap)
        elif gid not in referenced:
            del el.attrib["id"]
    _unwrap_bare_groups(root)
    _collapse_leaves(root, pending)
    for el, (tip, _) in pending.items():
        if tip is not None:
            t = ET.Element(f"{_S}title")
            t.text = tip
            el.insert(0, t)
    _group(root, [(el, group) for el, (_, group) in pending.items() if group is not None])
    _hoist_styles(root)
    _compact(root)
    # empty <defs> left by removed style / clip paths
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == f"{_S}defs" and len(child) == 0:
                parent.remove(child)
    w, h = _num(width), _num(height)
    root.attrib.pop("version", None)
    root.set("width", w)
    root.set("height", h)
    root.set("viewBox", f"0 0 {w} {h}")
    root.set("class", f"hyptest-fig {kind}")
    root.set("role", "img")
    root.set("aria-label", str(title))
    root.set("preserveAspectRatio", "xMidYMid meet")
    root.set("font-family", FONT_FAMILY)
    root.set("stroke-linejoin", "round")
    root.set("stroke-linecap", "butt")
    t = ET.Element(f"{_S}title")
    t.text = str(title)
    root.insert(0, t)
    for el in root.iter():  # plain names and one xmlns (ElementTree would invent ns0: prefixes)
        el.tag = el.tag.removeprefix(_S)
        # quotes in text escaped too (as in the rest of the report): ElementTree leaves them bare
        if el.text:
            el.text = el.text.replace('"', _DQ).replace("'", _SQ)
    root.attrib = {"xmlns": SVG_NS, **root.attrib}
    out = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    out = out.replace(_DQ, "&#34;").replace(_SQ, "&#39;")
    # no literal URL but the namespace: "://" in user text is written as a character reference
    return out.replace("://", "&#58;//").replace(f'xmlns="{SVG_NS.replace("://", "&#58;//")}"', f'xmlns="{SVG_NS}"')


def _num(x: float) -> str:
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return s or "0"


def _unwrap_bare_groups(root: ET.Element) -> None:
    """Replace every ``<g>`` without attributes by its children (matplotlib's clip and artist groups)."""
    changed = True
    while changed:
        changed = False
        for parent in list(root.iter()):
            kids = list(parent)
            if not any(k.tag == f"{_S}g" and not k.attrib for k in kids):
                continue
            new: list[ET.Element] = []
            for k in kids:
                if k.tag == f"{_S}g" and not k.attrib:
                    new.extend(list(k))
                    changed = True
                else:
                    new.append(k)
            for k in kids:
                parent.remove(k)
            parent.extend(new)


def _collapse_leaves(root: ET.Element, pending: dict[ET.Element, Any]) -> None:
    """A tagged ``<g>`` around one drawn element becomes that element (``<g class="pt"><use/></g>`` → ``<use class="pt"/>``)."""
    for parent in list(root.iter()):
        for g in list(parent):
            if g.tag != f"{_S}g" or "class" not in g.attrib:
                continue
            drawn = [k for k in g if k.tag != f"{_S}defs"]
            if len(drawn) != 1 or drawn[0].tag == f"{_S}g" or drawn[0].get("class") or len(drawn[0]):
                continue
            leaf = drawn[0]
            for k, v in g.attrib.items():
                if k not in leaf.attrib:
                    leaf.set(k, v)
            pos = list(parent).index(g)
            parent.remove(g)
            for k in reversed([k for k in g if k is not leaf]):  # its <defs> stay, before it
                parent.insert(pos, k)
                pos += 1
            parent.insert(pos, leaf)
            if g in pending:
                pending[leaf] = pending.pop(g)


def _group(root: ET.Element, wrappers: list[tuple[ET.Element, tuple[str, ...]]]) -> None:
    """Wrap the elements tagged with one ``group`` tuple (siblings) in one ``<g>`` at the first one's place."""
    if not wrappers:
        return
    parents = {c: p for p in root.iter() for c in p}
    made: dict[tuple[int, tuple[str, ...]], ET.Element] = {}
    for el, group in wrappers:
        parent = parents.get(el)
        if parent is None:
            continue
        key = (id(parent), group)
        if key not in made:
            cls, *kv = group
            g = ET.Element(f"{_S}g", {"class": cls})
            for k, v in zip(kv[::2], kv[1::2], strict=True):
                g.set(k, v)
            parent.insert(list(parent).index(el), g)
            made[key] = g
        parent.remove(el)
        made[key].append(el)


def _hoist_styles(root: ET.Element) -> None:
    """A ``<g>`` whose ``<use>`` children share one style carries it once (keeps a 3000-point panel small)."""
    for g in root.iter(f"{_S}g"):
        uses = [k for k in g if k.tag == f"{_S}use"]
        if len(uses) < 2 or len(uses) != len([k for k in g if k.tag not in (f"{_S}title", f"{_S}defs")]):
            continue
        styles = {u.get("style") for u in uses}
        if len(styles) != 1 or None in styles:
            continue
        for u in uses:
            del u.attrib["style"]
        g.set("style", styles.pop() or "")


_FLOAT = re.compile(r"-?\d+\.\d+")


def _short(m: re.Match[str]) -> str:
    s = f"{float(m.group(0)):.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _compact(root: ET.Element) -> None:
    """Coordinates to two decimals (a hundredth of a pixel) and no indentation whitespace."""
    for el in root.iter():
        for k in ("d", "x", "y", "transform"):
            v = el.get(k)
            if v is not None:
                el.set(k, _FLOAT.sub(_short, v))
        if el.tag not in (f"{_S}text", f"{_S}title", f"{_S}tspan"):
            if el.text is not None and not el.text.strip():
                el.text = None
            for k in el:
                if k.tail is not None and not k.tail.strip():
                    k.tail = None


def pixel_box(d: str) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, y0, x1, y1)`` of an SVG path of absolute M/L commands (for tests and layout checks)."""
    nums = np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)], dtype=float)
    xs, ys = nums[0::2], nums[1::2]
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
