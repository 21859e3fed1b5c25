"""How a widget redraws a figure fast on a CPU: drawing the PNG is most of a redraw
(``ltlab bench --widgets``), and building the axes and solving the constrained layout are
most of that. So a figure is drawn once (no tight-bbox second pass), and a widget either
moves its one figure to the new knob value in place (:class:`InPlace`, views with ``into=``)
or, for views that build a new figure each time, puts the last figure's solved layout on the
next one of the same shape (:class:`SameLayout`)."""
from __future__ import annotations

import io


def figure_png(fig) -> bytes:
    """The figure as PNG, drawn once: ltlab's figures lay themselves out (constrained layout),
    so the inline backend's bbox_inches='tight', which draws everything a second time to
    measure it, is not needed. Nor is savefig's own pre-draw: it runs one (text layout and
    all, about half a redraw) for any figure with a layout engine, even the placeholder that
    a frozen layout leaves, while Agg's print_png lays out (if an engine is set) as it draws."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    fig._ltlab_drawn = True   # its layout is solved: SameLayout may copy it
    return buf.getvalue()


class SameLayout:
    """A view whose every redraw has the same axes: the constrained layout of the last drawn
    figure is put on the new one instead of being solved again (a third to a half of a redraw
    here, ``ltlab bench --widgets``). A figure with other axes is laid out afresh."""

    def __init__(self, view):
        self.view, self.last = view, None

    def __call__(self, *args, **kwargs):
        fig, nums = self.view(*args, **kwargs)
        last, self.last = self.last, fig
        if last is not None and last is not fig and _same_grid(last, fig) and getattr(last, "_ltlab_drawn", False):
            fig.set_layout_engine("none")
            for a, b in zip(last.axes, fig.axes):
                b.set_position(a.get_position())
        return fig, nums


class InPlace:
    """A view that can redraw its last figure (``into=``): the widget keeps one figure, moved
    to each new knob value, its layout frozen after the first draw."""

    def __init__(self, view):
        self.view, self.fig = view, None

    def __call__(self, *args, **kwargs):
        if self.fig is not None and getattr(self.fig, "_ltlab_drawn", False):
            self.fig.set_layout_engine("none")
        fig, nums = self.view(*args, **kwargs, into=self.fig)
        self.fig = fig
        return fig, nums


def _same_grid(a, b) -> bool:
    """Same size, same subplot grid, titles of as many lines (a two-line title needs room)."""
    def grid(fig):
        spec = [ax.get_subplotspec().get_geometry() if ax.get_subplotspec() else None for ax in fig.axes]
        lines = [ax.get_title().count("\n") for ax in fig.axes]
        return spec, lines, (fig.get_suptitle() or "").count("\n"), tuple(fig.get_size_inches())
    return len(a.axes) == len(b.axes) and grid(a) == grid(b)
