"""axe-core in a Playwright page: the vendored script, and its violations as plain data."""

from __future__ import annotations

from pathlib import Path

AXE = Path(__file__).parent / "vendor" / "axe.min.js"

_VIOLATIONS = """async () => {
  const result = await axe.run(document);
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary.replace(/\\n\\s*/g, ' ')),
  }));
}"""


def violations(page) -> list[dict]:
    """Inject axe-core into the page and run all its rules; each violation with its nodes."""
    page.add_script_tag(path=str(AXE))
    return page.evaluate(_VIOLATIONS)
