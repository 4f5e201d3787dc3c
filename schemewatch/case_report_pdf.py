"""The case report as a PDF: the blocks of `case_report.document` laid out on A4 with fpdf2.

Offline and pure Python: no browser, no network. The text needs a Unicode TrueType font (the
rupee sign, names): `report_font` finds DejaVu Sans (Debian's fonts-dejavu-core and most Linux
desktops), or the file named by SCHEMEWATCH_REPORT_FONT; without one, `ReportFontMissing` says
what to install, and the HTML report is still there. The PDF holds text and lines only: no
link, no script, no embedded file; every page is numbered and footed with who exported it.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.fonts import FontFace

from schemewatch.case_report import (
    Bullets,
    CaseReport,
    Heading,
    Paragraph,
    Table,
    document,
    exported_line,
    title,
)
from schemewatch.errors import SchemewatchError

FONT_VARIABLE = "SCHEMEWATCH_REPORT_FONT"
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",  # macOS
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
FAMILY = "report"
HEADING_SIZES = {1: 16, 2: 13, 3: 10}  # points
TEXT_SIZE, TABLE_SIZE, FOOT_SIZE = 9, 7, 7
GREY = (80, 80, 80)


class ReportFontMissing(SchemewatchError):
    """No Unicode TrueType font for a PDF report on this machine."""


def report_font(environ=os.environ, candidates=FONT_CANDIDATES) -> Path:
    """The TrueType font a PDF report is written in: SCHEMEWATCH_REPORT_FONT, else a known one."""
    named = environ.get(FONT_VARIABLE)
    if named:
        if not Path(named).is_file():
            raise ReportFontMissing(f"{FONT_VARIABLE} names {named}, which is not a font file")
        return Path(named)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    raise ReportFontMissing(
        "a PDF report needs a Unicode TrueType font and none was found (looked for DejaVu Sans); "
        "install one (Debian: apt-get install fonts-dejavu-core) or set "
        f"{FONT_VARIABLE} to a .ttf file; the HTML report needs no font"
    )


def _bold_of(font: Path) -> Path:
    """The bold face next to a regular one (DejaVuSans-Bold.ttf), or the regular face itself."""
    bold = font.with_name(f"{font.stem}-Bold{font.suffix}")
    return bold if bold.is_file() else font


class _ReportPDF(FPDF):
    """A4 landscape (the payments table is wide), footed on every page."""

    def __init__(self, foot: str):
        super().__init__(orientation="L", unit="mm", format="A4")
        self.foot = foot
        self.set_auto_page_break(auto=True, margin=14)
        self.set_margins(12, 12, 12)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(FAMILY, size=FOOT_SIZE)
        self.set_text_color(*GREY)
        self.cell(0, 4, f"{self.foot}   Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def render_pdf(report: CaseReport, font: Path | None = None) -> bytes:
    """The report's blocks as PDF bytes (pure but for reading the font file)."""
    font = font or report_font()
    characters = _characters_of(font)
    foot = printable([Paragraph(f"{title(report)}. {exported_line(report)}")], characters)[0]
    pdf = _ReportPDF(foot.text)
    pdf.add_font(FAMILY, "", str(font))
    pdf.add_font(FAMILY, "B", str(_bold_of(font)))
    pdf.set_title(title(report))
    pdf.set_author(report.exported_by)
    pdf.set_creator("Schemewatch")
    pdf.set_creation_date(datetime.fromtimestamp(float(report.exported_at), UTC))
    pdf.add_page()
    for block in printable(document(report), characters):
        _lay_out(pdf, block)
    return bytes(pdf.output())


def _characters_of(font: Path) -> set[str]:
    with TTFont(str(font), lazy=True) as face:
        return {chr(code) for code in face.getBestCmap()}


def printable(blocks: list, characters: set[str]) -> list:
    """The blocks with every character the font cannot draw shown as a replacement mark, and a
    line saying so after the title's paragraphs (a dropped character could hide an id)."""
    used = {c for block in blocks for text in _texts(block) for c in text}
    missing = {c for c in used if c not in characters and not c.isspace()}
    if not missing:
        return blocks
    mark = "\ufffd" if "\ufffd" in characters else "?"
    table = str.maketrans(dict.fromkeys(missing, mark))
    notice = Paragraph(
        f"{len(missing)} character{'s' if len(missing) != 1 else ''} that this PDF's font cannot "
        f"draw are shown as {mark}; the HTML report shows them.",
        "meta",
    )
    changed = [_translated(block, table) for block in blocks]
    return [*changed[:3], notice, *changed[3:]]


def _texts(block) -> list[str]:
    if isinstance(block, Table):
        return [*block.headers, *(cell for row in block.rows for cell in row)]
    if isinstance(block, Bullets):
        return list(block.items)
    return [block.text]


def _translated(block, table: dict):
    if isinstance(block, Table):
        return dataclasses.replace(
            block,
            headers=tuple(h.translate(table) for h in block.headers),
            rows=tuple(tuple(c.translate(table) for c in row) for row in block.rows),
        )
    if isinstance(block, Bullets):
        return Bullets(tuple(item.translate(table) for item in block.items))
    return dataclasses.replace(block, text=block.text.translate(table))


def _lay_out(pdf: FPDF, block) -> None:
    if isinstance(block, Heading):
        size = HEADING_SIZES[block.level]
        pdf.ln(2 if block.level == 3 else 4)
        pdf.set_font(FAMILY, "B", size)
        pdf.multi_cell(0, size * 0.5, block.text, new_x="LMARGIN", new_y="NEXT")
    elif isinstance(block, Paragraph):
        pdf.set_font(FAMILY, size=TABLE_SIZE if block.kind == "footer" else TEXT_SIZE)
        pdf.set_text_color(*(GREY if block.kind else (0, 0, 0)))
        pdf.ln(4 if block.kind == "footer" else 1)
        pdf.multi_cell(0, 4.5, block.text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    elif isinstance(block, Bullets):
        pdf.set_font(FAMILY, size=TEXT_SIZE)
        for item in block.items:
            pdf.set_x(pdf.l_margin + 4)
            pdf.multi_cell(0, 4.5, f"• {item}", new_x="LMARGIN", new_y="NEXT")
    elif isinstance(block, Table):
        _table(pdf, block)


def _table(pdf: FPDF, table: Table) -> None:
    pdf.ln(1)
    pdf.set_font(FAMILY, size=TABLE_SIZE)
    with pdf.table(
        col_widths=_widths(table),
        text_align="LEFT",
        line_height=3.5,
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        repeat_headings=1,
    ) as grid:
        for cells in (table.headers, *table.rows):
            row = grid.row()
            for cell in cells:
                row.cell(cell)
    pdf.ln(1)


def _widths(table: Table) -> tuple[float, ...]:
    """Relative column widths: a column's longest text, at most 40 characters, but never less
    than its heading's longest word (a heading is not broken inside a word)."""
    return tuple(
        float(
            max(
                min(max((len(row[i]) for row in table.rows), default=0), 40),
                *map(len, heading.split()),
            )
        )
        for i, heading in enumerate(table.headers)
    )
