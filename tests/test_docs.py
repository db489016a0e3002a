"""The docs say what the code does: the settings table is the one SETTINGS generates."""

from pathlib import Path

from server.config import settings_table

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_operating_settings_table_matches_settings():
    text = (DOCS / "operating.md").read_text()
    start = text.index("-->", text.index("<!-- settings-table")) + 3
    end = text.index("<!-- /settings-table -->")
    assert text[start:end].strip() == settings_table()
