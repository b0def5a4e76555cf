"""Small inline SVG charts for the self-contained report pages of the device half.

The audit and compare pages must open on a device without matplotlib and without a network,
so their figures are SVG elements written here: one :class:`Chart` per panel, drawn in data
units (linear or log x), with ticks, grid, lines, error bars, bars, reference lines and a
legend. Nothing is fetched: no fonts, scripts or images. Torch-free and numpy-free.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

# Colors of the two audited models everywhere on the pages; other series take SERIES in order.
ROLE_COLORS = {"base": "#4d4d4d", "deployed": "#d62728"}
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def fmt(v: float) -> str:
    """A tick label: no trailing zeros, at most 3 significant digits, thousands written out."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 × powers of ten inside [lo, hi]; round linear steps when fewer than two fall inside."""
    out = [m * 10 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
           for m in (1, 2, 5) if lo <= m * 10 ** k <= hi]
    return out if len(out) >= 2 else [t for t in nice_ticks(lo, hi, 4) if lo <= t <= hi]


@dataclass(frozen=True)
class Scale:
    """Data value -> pixel, linear or log10."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float
    log: bool = False

    def __call__(self, v: float) -> float:
        f = (lambda t: math.log10(max(t, 1e-12))) if self.log else (lambda t: t)
        span = f(self.hi) - f(self.lo) or 1.0
        return self.px_lo + (f(v) - f(self.lo)) / span * (self.px_hi - self.px_lo)


class Chart:
    """One panel of a figure: axes in data units, drawn into an <svg> element by :meth:`render`."""

    def __init__(self, title: str, x: tuple[float, float], y: tuple[float, float], xlabel: str = "",
                 ylabel: str = "", width: int = 520, height: int = 300, xlog: bool = False, left: int = 58,
                 right: int = 16, top: int = 46, bottom: int = 46):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x = Scale(x[0], x[1], left, width - right, xlog)
        self.y = Scale(y[0], y[1], height - bottom, top)
        self.parts: list[str] = []
        self.legend_items: list[tuple[str, str, bool]] = []

    # axes =====================================================================================

    def xticks(self, values, labels=None, grid: bool = True, rotate: bool = False) -> None:
        labels = labels or [fmt(v) for v in values]
        yb = self.height - self.bottom
        for v, lab in zip(values, labels):
            px = self.x(v)
            if grid:
                self.parts.append(f'<line x1="{px:.1f}" y1="{self.top}" x2="{px:.1f}" y2="{yb}" stroke="#eee"/>')
            rot = f' transform="rotate(-25 {px:.1f} {yb + 14})"' if rotate else ""
            anchor = "end" if rotate else "middle"
            self.parts.append(f'<text x="{px:.1f}" y="{yb + 14}" font-size="10" text-anchor="{anchor}"{rot}>'
                              f'{esc(lab)}</text>')

    def yticks(self, values, labels=None, grid: bool = True) -> None:
        labels = labels or [fmt(v) for v in values]
        for v, lab in zip(values, labels):
            py = self.y(v)
            if grid:
                self.parts.append(f'<line x1="{self.left}" y1="{py:.1f}" x2="{self.width - self.right}" '
                                  f'y2="{py:.1f}" stroke="#eee"/>')
            self.parts.append(f'<text x="{self.left - 5}" y="{py + 3.5:.1f}" font-size="10" text-anchor="end">'
                              f'{esc(lab)}</text>')

    # marks ====================================================================================

    def line(self, xs, ys, color: str, label: str | None = None, dash: bool = False, width: float = 2,
             marker: bool = True) -> None:
        pts = [(self.x(a), self.y(b)) for a, b in zip(xs, ys) if a is not None and b is not None]
        if not pts:
            return
        d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        style = ' stroke-dasharray="6 4"' if dash else ""
        self.parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{width}"{style}/>')
        if marker:
            self.parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.2" fill="{color}"/>' for a, b in pts]
        if label:
            self.legend_items.append((label, color, dash))

    def errbar(self, x: float, lo: float, hi: float, color: str, horizontal: bool = False, cap: float = 4) -> None:
        """A whisker from lo to hi at x (vertical), or at y = x from lo to hi (horizontal)."""
        if horizontal:
            y, a, b = self.y(x), self.x(lo), self.x(hi)
            self.parts.append(f'<path d="M{a:.1f},{y:.1f}H{b:.1f}M{a:.1f},{y - cap:.1f}V{y + cap:.1f}'
                              f'M{b:.1f},{y - cap:.1f}V{y + cap:.1f}" stroke="{color}" fill="none"/>')
        else:
            px, a, b = self.x(x), self.y(lo), self.y(hi)
            self.parts.append(f'<path d="M{px:.1f},{a:.1f}V{b:.1f}M{px - cap:.1f},{a:.1f}H{px + cap:.1f}'
                              f'M{px - cap:.1f},{b:.1f}H{px + cap:.1f}" stroke="{color}" fill="none"/>')

    def rect(self, x0: float, x1: float, y0: float, y1: float, color: str, label: str | None = None,
             opacity: float = 0.85, title: str | None = None) -> None:
        a, b = sorted((self.x(x0), self.x(x1)))
        c, d = sorted((self.y(y0), self.y(y1)))
        tip = f"<title>{esc(title)}</title>" if title else ""
        self.parts.append(f'<rect x="{a:.1f}" y="{c:.1f}" width="{max(b - a, 0.5):.1f}" height="{max(d - c, 0.5):.1f}" '
                          f'fill="{color}" fill-opacity="{opacity}">{tip}</rect>')
        if label and label not in [i[0] for i in self.legend_items]:
            self.legend_items.append((label, color, False))

    def vline(self, x: float, color: str, label: str | None = None, dash: bool = True) -> None:
        px = self.x(x)
        style = ' stroke-dasharray="5 3"' if dash else ""
        self.parts.append(f'<line x1="{px:.1f}" y1="{self.top}" x2="{px:.1f}" y2="{self.height - self.bottom}" '
                          f'stroke="{color}" stroke-width="1.5"{style}/>')
        if label:
            self.legend_items.append((label, color, dash))

    def text(self, x: float, y: float, s: str, anchor: str = "start", size: int = 10, color: str = "#222",
             dx: float = 0, dy: float = 0) -> None:
        self.parts.append(f'<text x="{self.x(x) + dx:.1f}" y="{self.y(y) + dy:.1f}" font-size="{size}" '
                          f'text-anchor="{anchor}" fill="{color}">{esc(s)}</text>')

    # the element ==============================================================================

    def _legend(self) -> str:
        """One row under the title, right-aligned, outside the plot area (it never hides a mark)."""
        if not self.legend_items:
            return ""
        widths = [26 + 6.0 * len(lab) for lab, _, _ in self.legend_items]
        x = max(self.left, self.width - self.right - sum(widths))
        y = self.top - 10
        out = []
        for (lab, color, dash), w in zip(self.legend_items, widths):
            style = ' stroke-dasharray="4 2"' if dash else ""
            out.append(f'<line x1="{x:.1f}" y1="{y - 3}" x2="{x + 14:.1f}" y2="{y - 3}" stroke="{color}" '
                       f'stroke-width="3"{style}/><text x="{x + 18:.1f}" y="{y}" font-size="10">{esc(lab)}</text>')
            x += w
        return "".join(out)

    def render(self) -> str:
        w, h, yb = self.width, self.height, self.height - self.bottom
        axes = (f'<line x1="{self.left}" y1="{yb}" x2="{w - self.right}" y2="{yb}" stroke="#888"/>'
                f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{yb}" stroke="#888"/>')
        title = f'<text x="{w / 2:.0f}" y="18" font-size="13" font-weight="600" text-anchor="middle">{esc(self.title)}</text>'
        xl = f'<text x="{(self.left + w - self.right) / 2:.0f}" y="{h - 6}" font-size="11" text-anchor="middle">' \
             f'{esc(self.xlabel)}</text>'
        yl = f'<text transform="translate(13 {(self.top + yb) / 2:.0f}) rotate(-90)" font-size="11" ' \
             f'text-anchor="middle">{esc(self.ylabel)}</text>'
        return (f'<svg role="img" width="{w}" height="{h}" '
                f'viewBox="0 0 {w} {h}" style="{FONT};background:#fff">'
                f'<title>{esc(self.title)}</title>{title}' + "".join(self.parts) + axes + xl + yl
                + self._legend() + "</svg>")


def figure(title: str, panels: list[str], note: str = "") -> str:
    """A figure on the page: a caption and its panels side by side (wrapping on narrow screens)."""
    cap = f"<figcaption>{esc(title)}" + (f' <span class="meta">{esc(note)}</span>' if note else "") + "</figcaption>"
    return f'<figure class="fig">{cap}<div class="panels">{"".join(panels)}</div></figure>'
