"""Draws a picture of splatdiff's sidebar panel from the panel's real ``draw()`` code::

    .venv/bin/python blender_scripts/panel_figure.py [--out tests/figures/panel.png] [--running]

Headless ``bpy`` has no UI, so a real screenshot is impossible. Instead this
script registers the add-on, builds the demo scene, and calls ``draw(self,
context)`` of ``SPLATDIFF_PT_main`` and its sub-panels with a ``self.layout``
that *records* the ``UILayout`` calls. Each ``prop()`` is resolved against
its RNA definition (UI name, type, subtype, enum items, current value), so
labels and values come from the real properties. The recorded tree is
rendered to HTML styled like Blender's default dark theme and screenshotted
with headless Chromium (``apt-get install -y chromium``).

A ``UILayout`` call or attribute the recorder does not know raises an error,
so the picture never silently drops a widget.

* default: ``tests/figures/panel.png`` (idle);
* ``--running``: also ``panel_running.png`` beside it (status box with the
  progress bar, as while a run is capturing).
"""

import argparse
import html
import importlib.util
import inspect
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import bpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "blender_scripts"))

CAPTION = "Drawn from the panel's draw() calls by blender_scripts/panel_figure.py (headless bpy has no UI to screenshot)"
PROMPT = "a weathered bronze statue with green verdigris patina"
NEGATIVE_PROMPT = "blurry, low detail"
WIDTH = 320  # CSS px of the sidebar (tab strip included)


class RecorderError(RuntimeError):
    pass


# ------------------------------------------------------------------ add-on

def load_addon():
    """Imports ``addon/`` as the package ``splatdiff`` (as tests/python/conftest.py does)."""
    if "splatdiff" in sys.modules:
        return sys.modules["splatdiff"]
    spec = importlib.util.spec_from_file_location(
        "splatdiff", os.path.join(ROOT, "addon", "__init__.py"),
        submodule_search_locations=[os.path.join(ROOT, "addon")],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["splatdiff"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- recorder

class Node:
    """A recorded widget: kind plus keyword data."""

    def __init__(self, kind, **data):
        self.kind = kind
        self.data = data


class RecordingLayout:
    """The subset of ``bpy.types.UILayout`` the panels use; records the calls."""

    _ATTRS = {
        "enabled": True, "active": True, "alert": False, "scale_y": 1.0,
        "use_property_split": False, "use_property_decorate": True,
    }

    def __init__(self, kind, parent=None, align=False):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "align", align)
        object.__setattr__(self, "children", [])
        # Property split, decoration and scale are copied into sub-layouts when they are
        # made, as in Blender; enabled/active/alert act through nesting (see the CSS).
        values = dict(self._ATTRS)
        if parent is not None:
            for name in ("use_property_split", "use_property_decorate", "scale_y"):
                values[name] = getattr(parent, name)
        object.__setattr__(self, "_values", values)

    # -------------------------------------------------------- attributes
    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise RecorderError(
            f"panel_figure: UILayout.{name} is not supported by the recorder; "
            f"add it to RecordingLayout in blender_scripts/panel_figure.py"
        )

    def __setattr__(self, name, value):
        if name not in self._ATTRS:
            raise RecorderError(f"panel_figure: setting UILayout.{name} is not supported by the recorder")
        self._values[name] = value

    # --------------------------------------------------------- sub-layouts
    def _sub(self, kind, align=False, **kwargs):
        if kwargs:
            raise RecorderError(f"panel_figure: UILayout.{kind}({', '.join(kwargs)}=...) is not supported")
        sub = RecordingLayout(kind, self, align)
        self.children.append(sub)
        return sub

    def row(self, align=False, **kwargs):
        return self._sub("row", align, **kwargs)

    def column(self, align=False, **kwargs):
        return self._sub("column", align, **kwargs)

    def box(self, **kwargs):
        return self._sub("box", False, **kwargs)

    def grid_flow(self, row_major=True, columns=0, even_columns=False, align=False, **kwargs):
        if kwargs or not row_major or columns < 1:
            raise RecorderError("panel_figure: only grid_flow(row_major=True, columns=N>0, even_columns=, align=)")
        sub = self._sub("grid", align)
        object.__setattr__(sub, "columns", columns)
        return sub

    def template_list(self, listtype_name, list_id, dataptr, propname, active_dataptr, active_propname,
                      rows=5, **kwargs):
        """Records the list as the UIList class draws it: one recorded row per item."""
        if kwargs:
            raise RecorderError(f"panel_figure: template_list({', '.join(kwargs)}=...) is not supported")
        cls = getattr(bpy.types, listtype_name)
        active = getattr(active_dataptr, active_propname)
        items = []
        for index, item in enumerate(getattr(dataptr, propname)):
            row = RecordingLayout("column", self)
            cls.draw_item(FakeList(cls), bpy.context, row, dataptr, item, 0, active_dataptr, active_propname, index)
            items.append((row, index == active))
        self.children.append(Node("list", items=items, rows=rows))

    def template_icon(self, icon_value=0, scale=1.0, **kwargs):
        """A preview icon: drawn from the image file the add-on's previews loaded it from."""
        if kwargs:
            raise RecorderError(f"panel_figure: template_icon({', '.join(kwargs)}=...) is not supported")
        path = THUMBNAILS.get(icon_value)
        if path is None:
            raise RecorderError(f"panel_figure: icon {icon_value} is not one of the add-on's thumbnails")
        self.children.append(Node("image", path=path, scale=scale))

    # ------------------------------------------------------------ widgets
    def prop(self, data, property, text=None, slider=False, icon='NONE', **kwargs):
        if kwargs:
            raise RecorderError(f"panel_figure: UILayout.prop({', '.join(kwargs)}=...) is not supported")
        rna = data.bl_rna.properties.get(property)
        if rna is None:
            raise RecorderError(f"panel_figure: {data.bl_rna.identifier} has no property {property!r}")
        info = {
            "identifier": property,
            "name": rna.name,
            "type": rna.type,
            "subtype": rna.subtype,
            "value": getattr(data, property),
            "text": text,
            "slider": slider,
            "icon": icon,
        }
        if rna.type == 'ENUM':
            info["items"] = {item.identifier: item.name for item in rna.enum_items}
        if rna.type in {'INT', 'FLOAT'}:
            info["hard_min"], info["hard_max"] = rna.hard_min, rna.hard_max
            info["soft_min"], info["soft_max"] = rna.soft_min, rna.soft_max
        if rna.type == 'FLOAT':
            info["precision"] = rna.precision
        if rna.type == 'POINTER':
            info["fixed_type"] = rna.fixed_type.identifier
        self.children.append(Node("prop", **info))

    def operator(self, operator, text=None, icon='NONE', emboss=True, **kwargs):
        if kwargs:
            raise RecorderError(f"panel_figure: UILayout.operator({', '.join(kwargs)}=...) is not supported")
        module, name = operator.split(".")
        op = getattr(getattr(bpy.ops, module), name)
        try:
            rna = op.get_rna_type()
        except KeyError:
            raise RecorderError(f"panel_figure: operator {operator!r} is not registered") from None
        self.children.append(Node("operator", idname=operator, text=rna.name if text is None else text,
                                  icon=icon, emboss=emboss))
        return OperatorProperties(rna)

    def label(self, text="", icon='NONE', **kwargs):
        if kwargs:
            raise RecorderError(f"panel_figure: UILayout.label({', '.join(kwargs)}=...) is not supported")
        self.children.append(Node("label", text=text, icon=icon))

    def progress(self, factor=0.0, type='BAR', text="", **kwargs):
        if kwargs or type != 'BAR':
            raise RecorderError("panel_figure: only UILayout.progress(factor=, type='BAR', text=) is supported")
        self.children.append(Node("progress", factor=factor, text=text))

    def separator(self, factor=1.0, **kwargs):
        if kwargs:
            raise RecorderError(f"panel_figure: UILayout.separator({', '.join(kwargs)}=...) is not supported")
        self.children.append(Node("separator", factor=factor))


# Headless bpy has no icon system (every preview's icon_id is 0), so while
# recording, the panels' thumbnail() hands out ids of its own, mapped to the
# image files the panel asked for.
THUMBNAILS = {}


def recording_thumbnail(path):
    if not path or not os.path.isfile(path):
        return 0
    icon = next((i for i, p in THUMBNAILS.items() if p == path), len(THUMBNAILS) + 1)
    THUMBNAILS[icon] = path
    return icon


class OperatorProperties:
    """What ``UILayout.operator()`` returns: accepts the operator's own properties only."""

    def __init__(self, rna):
        object.__setattr__(self, "_rna", rna)

    def __setattr__(self, name, value):
        if name not in self._rna.properties:
            raise RecorderError(f"panel_figure: operator {self._rna.identifier} has no property {name!r}")


class FakeList:
    """``self`` for a UIList's ``draw_item()``."""

    def __init__(self, cls):
        self.cls = cls


class FakePanel:
    """``self`` for a panel's ``draw()``: a recording layout plus the class's own attributes."""

    def __init__(self, cls):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "layout", RecordingLayout("column"))

    def __getattr__(self, name):
        cls = object.__getattribute__(self, "_cls")
        static = inspect.getattr_static(cls, name)
        if isinstance(static, (staticmethod, classmethod)):
            return getattr(cls, name)
        value = getattr(cls, name)
        if inspect.isfunction(value):
            return value.__get__(self)
        return value


def record_panels(context):
    """[(panel class, recorded root layout)] for the main panel and its sub-panels, in draw order."""
    from splatdiff import panels

    panels.thumbnail = recording_thumbnail
    main = panels.SPLATDIFF_PT_main
    ordered = [main] + [cls for cls in panels.classes if getattr(cls, "bl_parent_id", None) == main.bl_idname]
    recorded = []
    for cls in ordered:
        for hook in ("draw_header", "draw_header_preset"):
            if hook in vars(cls):
                raise RecorderError(f"panel_figure: {cls.__name__}.{hook} is not supported by the recorder")
        if "poll" in vars(cls) and not cls.poll(context):
            continue
        fake = FakePanel(cls)
        cls.draw(fake, context)
        recorded.append((cls, fake.layout))
    return recorded


# ------------------------------------------------------------------- icons

def _svg(body, view="0 0 16 16"):
    return f'<svg class="ic" viewBox="{view}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'


ICONS = {
    'NONE': "",
    'BLANK1': '<span class="ic"></span>',
    'PLAY': _svg('<path d="M5 3.5 L12.5 8 L5 12.5 Z" fill="#e6e6e6"/>'),
    'CANCEL': _svg('<circle cx="8" cy="8" r="5.2" fill="none" stroke="#e6e6e6" stroke-width="1.5"/>'
                   '<path d="M4.5 11.5 L11.5 4.5" stroke="#e6e6e6" stroke-width="1.5"/>'),
    'IMPORT': _svg('<path d="M3 9.5 V13 H13 V9.5" fill="none" stroke="#e6e6e6" stroke-width="1.4"/>'
                   '<path d="M8 2.5 V10 M5 7 L8 10 L11 7" fill="none" stroke="#e6e6e6" stroke-width="1.4"/>'),
    'SORTTIME': _svg('<path d="M4.5 2.5 H11.5 M4.5 13.5 H11.5 M5.5 2.5 C5.5 6 10.5 6.5 10.5 13.5 '
                     'M10.5 2.5 C10.5 6 5.5 6.5 5.5 13.5" fill="none" stroke="#e6e6e6" stroke-width="1.3"/>'),
    'ERROR': _svg('<path d="M8 2 L14.5 13.5 H1.5 Z" fill="#e0b030"/>'
                  '<path d="M8 6 V10 M8 11.3 V12.3" stroke="#222" stroke-width="1.5"/>'),
    'X': _svg('<path d="M4.5 4.5 L11.5 11.5 M11.5 4.5 L4.5 11.5" stroke="#e6e6e6" stroke-width="1.5"/>'),
    'CHECKMARK': _svg('<path d="M3.5 8.5 L6.8 11.5 L12.5 4.5" fill="none" stroke="#e6e6e6" stroke-width="1.6"/>'),
    'OBJECT_DATA': _svg('<path d="M8 2.5 L13.5 12.5 H2.5 Z" fill="none" stroke="#f0a050" stroke-width="1.5"/>'
                        '<circle cx="8" cy="9.3" r="1.6" fill="#f0a050"/>'),
    'FILE_FOLDER': _svg('<path d="M2 4 H6.5 L8 5.5 H14 V13 H2 Z" fill="#b8b8b8"/>'),
    'FILEBROWSER': _svg('<path d="M2 4 H6.5 L8 5.5 H14 V13 H2 Z" fill="#b8b8b8"/>'),
    'PAUSE': _svg('<path d="M5 3.5 V12.5 M11 3.5 V12.5" stroke="#e6e6e6" stroke-width="2.2"/>'),
    'INFO': _svg('<circle cx="8" cy="8" r="5.8" fill="none" stroke="#e6e6e6" stroke-width="1.3"/>'
                 '<path d="M8 7 V11.5 M8 4.6 V5.6" stroke="#e6e6e6" stroke-width="1.5"/>'),
    'TEXT': _svg('<path d="M3.5 2.5 H12.5 V13.5 H3.5 Z" fill="none" stroke="#e6e6e6" stroke-width="1.2"/>'
                 '<path d="M5.5 5.5 H10.5 M5.5 8 H10.5 M5.5 10.5 H9" stroke="#e6e6e6" stroke-width="1.1"/>'),
    'TRASH': _svg('<path d="M3 4.5 H13 M6 4.5 V3 H10 V4.5 M4.5 4.5 L5.3 13.5 H10.7 L11.5 4.5" fill="none" '
                  'stroke="#e6e6e6" stroke-width="1.3"/>'),
    'IMAGE_DATA': _svg('<path d="M2.5 3.5 H13.5 V12.5 H2.5 Z" fill="none" stroke="#e6e6e6" stroke-width="1.2"/>'
                       '<path d="M3.5 11.5 L7 7.5 L9.5 10 L11 8.5 L12.5 11.5 Z" fill="#e6e6e6"/>'),
    'SHADING_RENDERED': _svg('<circle cx="8" cy="8" r="5.5" fill="#9a9a9a"/>'
                             '<path d="M8 2.5 A5.5 5.5 0 0 1 8 13.5 Z" fill="#e6e6e6"/>'),
    'HIDE_OFF': _svg('<path d="M1.5 8 C4 3.5 12 3.5 14.5 8 C12 12.5 4 12.5 1.5 8 Z" fill="none" stroke="#e6e6e6" '
                     'stroke-width="1.3"/><circle cx="8" cy="8" r="2.2" fill="#e6e6e6"/>'),
    'HIDE_ON': _svg('<path d="M1.5 8 C4 12 12 12 14.5 8" fill="none" stroke="#9a9a9a" stroke-width="1.3"/>'),
}


def icon_html(icon):
    if icon not in ICONS:
        raise RecorderError(f"panel_figure: no drawing for icon {icon!r}; add one to ICONS")
    return ICONS[icon]


# ----------------------------------------------------------------- values

def _strip_zeros(text):
    return re.sub(r"\.?0+$", "", text) if "." in text else text


def format_number(info):
    value, subtype = info["value"], info["subtype"]
    if info["type"] == 'INT':
        text = str(value)
        return f"{text} px" if subtype == 'PIXEL' else text
    precision = info["precision"]
    if subtype == 'ANGLE':
        return _strip_zeros(f"{math.degrees(value):.{precision}f}") + "\u00b0"
    if subtype == 'PERCENTAGE':
        return f"{value:.{precision}f}%"
    if subtype in {'NONE', 'FACTOR', 'DISTANCE', 'UNSIGNED'}:
        return f"{value:.{precision}f}"
    raise RecorderError(f"panel_figure: float subtype {subtype!r} is not supported")


# ------------------------------------------------------------------- HTML

def esc(text):
    return html.escape(str(text))


def state_classes(layout, extra=""):
    classes = [extra] if extra else []
    if not layout.enabled:
        classes.append("disabled")
    if not layout.active:
        classes.append("inactive")
    if layout.alert:
        classes.append("alert")
    return " ".join(classes)


def widget_html(node, layout, in_row):
    d = node.data
    height = round(22 * layout.scale_y)
    style = f' style="height:{height}px"'
    if node.kind == "separator":
        return f'<div class="sep" style="height:{round(8 * d["factor"])}px"></div>'
    if node.kind == "label":
        return f'<div class="label"{style}>{icon_html(d["icon"])}<span class="txt">{esc(d["text"])}</span></div>'
    if node.kind == "progress":
        pct = max(0.0, min(1.0, d["factor"])) * 100.0
        return (f'<div class="progress"{style}><div class="fill" style="width:{pct:.1f}%"></div>'
                f'<span class="ptxt">{esc(d["text"])}</span></div>')
    if node.kind == "operator":
        icon_only = not d["text"]
        cls = "btn" + (" icononly" if icon_only else "") + ("" if d["emboss"] else " noemboss")
        text = "" if icon_only else f'<span class="txt">{esc(d["text"])}</span>'
        return f'<div class="{cls}" title="{esc(d["idname"])}"{style}>{icon_html(d["icon"])}{text}</div>'
    if node.kind == "prop":
        return prop_html(d, layout, style, in_row)
    if node.kind == "list":
        rows = "".join(
            f'<div class="lrow{" on" if active else ""}">{layout_html(row, in_row=True)}</div>' for row, active in d["items"]
        )
        blank = "".join('<div class="lrow"></div>' for _ in range(max(0, d["rows"] - len(d["items"]))))
        return f'<div class="ulist">{rows}{blank}</div>'
    if node.kind == "image":
        return f'<div class="thumb"><img src="{esc(image_uri(d["path"]))}"></div>'

    raise RecorderError(f"panel_figure: cannot draw a recorded {node.kind!r}")


def image_uri(path):
    import base64

    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def prop_html(d, layout, style, in_row):
    label = d["name"] if d["text"] is None else d["text"]
    kind, subtype, value = d["type"], d["subtype"], d["value"]
    split = layout.use_property_split and not in_row
    if d["icon"] != 'NONE':
        raise RecorderError("panel_figure: prop(icon=...) is not supported")
    if kind == 'BOOLEAN':
        check = '<span class="check on">' + ICONS['CHECKMARK'] + '</span>' if value else '<span class="check"></span>'
        widget = f'<div class="bool"{style}>{check}<span class="txt">{esc(label)}</span></div>'
        return f'<div class="split"><div class="lbl"></div><div class="val">{widget}</div></div>' if split else widget
    if kind in {'INT', 'FLOAT'}:
        text = format_number(d)
        if d["slider"] or subtype == 'FACTOR' and d["slider"]:
            lo, hi = d["soft_min"], d["soft_max"]
            frac = 0.0 if hi <= lo else max(0.0, min(1.0, (value - lo) / (hi - lo)))
            inner = f'<div class="fill" style="width:{100 * frac:.1f}%"></div>'
            widget = f'<div class="num slider"{style}>{inner}<span class="ntxt">{esc(text)}</span></div>'
        else:
            widget = f'<div class="num"{style}><span class="ntxt">{esc(text)}</span></div>'
        if not split and label:
            widget = widget.replace('<span class="ntxt">', f'<span class="nlbl">{esc(label)}</span><span class="ntxt">')
    elif kind == 'STRING':
        icon = {'DIR_PATH': 'FILE_FOLDER', 'FILE_PATH': 'FILEBROWSER', 'NONE': None}.get(subtype, "?")
        if icon == "?":
            raise RecorderError(f"panel_figure: string subtype {subtype!r} is not supported")
        field = f'<div class="text"{style}><span class="ttxt">{esc(value)}</span></div>'
        if icon:
            field = (f'<div class="joined">{field}<div class="btn icononly filebtn"{style}>'
                     f'{icon_html(icon)}</div></div>')
        widget = field
    elif kind == 'ENUM':
        name = d["items"].get(value, value)
        widget = (f'<div class="menu"{style}><span class="txt">{esc(name)}</span>'
                  f'<span class="chev">\u2304</span></div>')
    elif kind == 'POINTER':
        if d["fixed_type"] != 'Object':
            raise RecorderError(f"panel_figure: pointers to {d['fixed_type']} are not supported")
        name = value.name if value is not None else ""
        widget = (f'<div class="text search"{style}>{icon_html("OBJECT_DATA")}'
                  f'<span class="ttxt">{esc(name)}</span>'
                  + (f'<span class="clear">{ICONS["X"]}</span>' if value is not None else "")
                  + '</div>')
    else:
        raise RecorderError(f"panel_figure: property type {kind!r} is not supported")
    if split:
        return (f'<div class="split"><div class="lbl">{esc(label)}</div>'
                f'<div class="val">{widget}</div></div>')
    return widget


def layout_html(layout, in_row=False):
    parts = []
    is_row = layout.kind == "row"
    for child in layout.children:
        if isinstance(child, RecordingLayout):
            parts.append(layout_html(child, in_row=is_row or (in_row and child.kind == "row")))
        else:
            parts.append(widget_html(child, layout, in_row=is_row))
    align = " align" if layout.align else ""
    grid = f' style="grid-template-columns: repeat({layout.columns}, auto)"' if layout.kind == "grid" else ""
    return f'<div class="{state_classes(layout, layout.kind + align)}"{grid}>{"".join(parts)}</div>'


CSS = """
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; background: #1d1d1d; }
body { font-family: "Inter", "Liberation Sans", "DejaVu Sans", sans-serif; font-size: 12px; color: #e6e6e6;
       -webkit-font-smoothing: antialiased; }
#root { width: %(width)dpx; display: flex; background: #2b2b2b; }
#region { flex: 1; min-width: 0; padding: 6px 6px 8px 6px; }
#tabs { width: 22px; background: #232323; border-left: 1px solid #1a1a1a; padding-top: 6px; }
.tab { writing-mode: vertical-rl; padding: 10px 0; text-align: center; color: #9a9a9a; font-size: 11px;
       margin: 0 0 3px 1px; border-radius: 0 4px 4px 0; background: #2b2b2b; }
.tab.on { background: #3d3d3d; color: #f0f0f0; box-shadow: inset 2px 0 0 #4772b3; }
.panel { background: #303030; border-radius: 5px; margin-bottom: 6px; overflow: hidden;
         border: 1px solid #262626; }
.phead { height: 26px; display: flex; align-items: center; background: #3d3d3d; padding: 0 8px;
         font-size: 12.5px; color: #f0f0f0; }
.phead .tri { width: 14px; color: #cfcfcf; font-size: 10px; }
.phead .grip { margin-left: auto; width: 10px; height: 10px; opacity: .35;
               background-image: radial-gradient(#ddd 1px, transparent 1.2px); background-size: 4px 4px; }
.pbody { padding: 6px 8px 8px 8px; }
.subpanel { margin: 8px -2px 0 -2px; border-radius: 4px; background: #303030; border: 1px solid #292929;
            overflow: hidden; }
.subpanel .phead { background: #373737; height: 24px; font-size: 12px; }
.column { display: flex; flex-direction: column; gap: 3px; }
.column.align { gap: 0; }
.column + .column, .column + .row, .row + .column, .row + .row, .column + .box, .row + .box,
.box + .column, .box + .row { margin-top: 8px; }
.row { display: flex; flex-direction: row; gap: 4px; align-items: stretch; }
.row.align { gap: 0; }
.row > * { flex: 1 1 0; min-width: 0; }
.row > .icononly { flex: 0 0 24px; }
.row > .row { display: flex; }
.box { background: #282828; border: 1px solid #1f1f1f; border-radius: 4px; padding: 4px 6px;
       display: flex; flex-direction: column; gap: 2px; }
.disabled { opacity: .5; }
.disabled .disabled { opacity: 1; }
.inactive .lbl, .inactive .txt, .inactive .ntxt, .inactive .ttxt { color: #8a8a8a; }
.split { display: flex; align-items: center; gap: 0; }
.split .lbl { flex: 0 0 40%%; text-align: right; padding-right: 8px; color: #c8c8c8;
              white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.split .val { flex: 1 1 0; min-width: 0; }
.ic { width: 16px; height: 16px; flex: 0 0 16px; display: inline-block; }
.label { display: flex; align-items: center; gap: 4px; padding: 0 2px; white-space: nowrap; overflow: hidden; }
.label .txt { overflow: hidden; text-overflow: ellipsis; }
.alert .label .txt { color: #ff8c8c; }
.btn { display: flex; align-items: center; justify-content: center; gap: 5px; background: #545454;
       border: 1px solid #3a3a3a; border-radius: 4px; color: #e6e6e6; padding: 0 6px; white-space: nowrap;
       box-shadow: 0 1px 0 rgba(0,0,0,.25); }
.btn.noemboss { background: none; border-color: transparent; box-shadow: none; }
.btn.icononly { padding: 0; }
.alert .btn:not(.noemboss) { background: #8c2f2f; }
.row.align > * { border-radius: 0; }
.row.align > *:first-child, .row.align > *:first-child > *:first-child { border-top-left-radius: 4px;
       border-bottom-left-radius: 4px; }
.row.align > *:last-child, .row.align > *:last-child > *:last-child { border-top-right-radius: 4px;
       border-bottom-right-radius: 4px; }
.row.align > * + * { margin-left: -1px; }
.num { position: relative; display: flex; align-items: center; justify-content: center; background: #545454;
       border: 1px solid #3a3a3a; border-radius: 4px; overflow: hidden; }
.num .fill { position: absolute; left: 0; top: 0; bottom: 0; background: #4772b3; }
.num .ntxt, .num .nlbl { position: relative; }
.num .nlbl { margin-right: auto; padding-left: 8px; }
.text { display: flex; align-items: center; gap: 4px; background: #1d1d1d; border: 1px solid #3a3a3a;
        border-radius: 4px; padding: 0 6px; min-width: 0; flex: 1 1 0; }
.text .ttxt { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; flex: 1 1 0; }
.text.search { background: #1d1d1d; padding-left: 3px; }
.text .clear .ic { width: 14px; height: 14px; opacity: .8; }
.joined { display: flex; }
.joined > .text { border-top-right-radius: 0; border-bottom-right-radius: 0; }
.joined > .filebtn { flex: 0 0 24px; border-top-left-radius: 0; border-bottom-left-radius: 0; margin-left: -1px; }
.menu { display: flex; align-items: center; background: #282828; border: 1px solid #3a3a3a; border-radius: 4px;
        padding: 0 6px 0 8px; }
.menu .txt { flex: 1; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.menu .chev { color: #b0b0b0; font-size: 13px; line-height: 1; margin-top: -6px; }
.bool { display: flex; align-items: center; gap: 6px; }
.check { width: 15px; height: 15px; border-radius: 3px; background: #545454; border: 1px solid #3a3a3a;
         display: inline-flex; align-items: center; justify-content: center; }
.check.on { background: #4772b3; border-color: #3b5f96; }
.check .ic { width: 13px; height: 13px; flex-basis: 13px; }
.progress { position: relative; display: flex; align-items: center; justify-content: center;
            background: #1d1d1d; border: 1px solid #3a3a3a; border-radius: 4px; overflow: hidden; }
.progress .fill { position: absolute; left: 0; top: 0; bottom: 0; background: #4772b3; }
.progress .ptxt { position: relative; }
.grid { display: grid; column-gap: 10px; row-gap: 0; font-size: 11px; }
.grid .label { height: 18px !important; }
.ulist { background: #1d1d1d; border: 1px solid #3a3a3a; border-radius: 4px; padding: 2px; }
.lrow { height: 22px; border-radius: 3px; }
.lrow.on { background: #334d80; }
.lrow > .column > .row { display: flex; }
.thumb img { width: 100%%; border-radius: 3px; display: block; }
.caption { width: %(width)dpx; padding: 6px 8px 8px 8px; color: #9a9a9a; font-size: 10px; line-height: 1.35;
           background: #1d1d1d; font-style: italic; }
"""


def page_html(recorded, categories):
    main_cls, main_layout = recorded[0]
    subs = "".join(
        f'<div class="subpanel"><div class="phead"><span class="tri">\u25bc</span>{esc(cls.bl_label)}</div>'
        f'<div class="pbody">{layout_html(layout)}</div></div>'
        for cls, layout in recorded[1:]
    )
    panel = (f'<div class="panel"><div class="phead"><span class="tri">\u25bc</span>{esc(main_cls.bl_label)}'
             f'<span class="grip"></span></div><div class="pbody">{layout_html(main_layout)}{subs}</div></div>')
    tabs = "".join(f'<div class="tab{" on" if on else ""}">{esc(name)}</div>' for name, on in categories)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>{CSS % {"width": WIDTH}}</style></head>
<body><div id="all"><div id="root"><div id="region">{panel}</div><div id="tabs">{tabs}</div></div>
<div class="caption">{esc(CAPTION)}</div></div>
<script>document.body.setAttribute("data-height",
  Math.ceil(document.getElementById("all").getBoundingClientRect().height));</script>
</body></html>
"""


# -------------------------------------------------------------- chromium

def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_cmd(chromium, profile, *extra):
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", *extra,
    ]


def screenshot(chromium, html_text, out_png, scale):
    with tempfile.TemporaryDirectory() as tmp:
        page = os.path.join(tmp, "panel.html")
        with open(page, "w", encoding="utf-8") as f:
            f.write(html_text)
        url = "file://" + page
        dom = subprocess.run(
            chromium_cmd(chromium, os.path.join(tmp, "p1"), f"--window-size={WIDTH},2000", "--dump-dom", url),
            check=True, capture_output=True, text=True, timeout=120,
        ).stdout
        match = re.search(r'data-height="(\d+)"', dom)
        if not match:
            raise RuntimeError("panel_figure: could not measure the page height with chromium --dump-dom")
        height = int(match.group(1))
        tmp_png = os.path.join(tmp, "shot.png")
        subprocess.run(
            chromium_cmd(chromium, os.path.join(tmp, "p2"), f"--force-device-scale-factor={scale}",
                         f"--window-size={WIDTH},{height}", f"--screenshot={tmp_png}", url),
            check=True, capture_output=True, text=True, timeout=120,
        )
        os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
        shutil.copyfile(tmp_png, out_png)
    return height


# ------------------------------------------------------------------ main

def set_runtime(rt, running):
    rt.running = running
    rt.cancel_requested = False
    rt.last_error = ""
    rt.last_result = ""
    if running:
        # What a run shows while the capture stage renders (addon/run.py: _capture).
        done, total = 14, 36
        rt.stage = "capture"
        rt.progress = 0.8 * done / total
        rt.message = f"Rendered view {done}/{total}"
    else:
        rt.stage = ""
        rt.progress = 0.0
        rt.message = ""


def draw_figure(context, chromium, out_png, running, scale, keep_html=None):
    from splatdiff import panels

    set_runtime(context.window_manager.splatdiff, running)
    recorded = record_panels(context)
    category = panels.SPLATDIFF_PT_main.bl_category
    # The 3D View sidebar's built-in tabs, then the add-on's.
    categories = [("Item", False), ("Tool", False), ("View", False), (category, True)]
    text = page_html(recorded, categories)
    if keep_html:
        with open(keep_html, "w", encoding="utf-8") as f:
            f.write(text)
    screenshot(chromium, text, out_png, scale)
    print(f"panel_figure: wrote {out_png} ({os.path.getsize(out_png) // 1024} KB)")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "figures", "panel.png"),
                        help="PNG of the idle panel (default: tests/figures/panel.png)")
    parser.add_argument("--running", action="store_true",
                        help="also draw the panel while a run is going, as <out>_running.png")
    parser.add_argument("--scale", type=float, default=2.0, help="device pixels per CSS px (default 2)")
    parser.add_argument("--html", action="store_true", help="keep the HTML beside each PNG")
    parser.add_argument("--blend", help="draw this .blend's scene (e.g. out/demo/demo.blend, whose runs fill the "
                                        "Runs panel) instead of a fresh demo scene")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        print("panel_figure: chromium is not installed; install it with "
              "`apt-get update && apt-get install -y chromium`", file=sys.stderr)
        return 2

    import demo_scene

    addon = load_addon()
    addon.register()
    try:
        if args.blend:
            bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend))
        context = bpy.context
        scene = context.scene
        settings = scene.splatdiff
        if args.blend:
            record = addon.history.active(scene)
            if settings.target is None and record is not None:
                settings.target = scene.objects.get(record.object_name)
        else:
            settings.target = demo_scene.build(scene)
            settings.prompt = PROMPT
            settings.negative_prompt = NEGATIVE_PROMPT

        outs = [(args.out, False)]
        if args.running:
            stem, ext = os.path.splitext(args.out)
            outs.append((f"{stem}_running{ext or '.png'}", True))
        for out, running in outs:
            draw_figure(context, chromium, out, running, args.scale,
                        keep_html=os.path.splitext(out)[0] + ".html" if args.html else None)
    finally:
        set_runtime(bpy.context.window_manager.splatdiff, False)
        addon.unregister()
    return 0


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(argv))
