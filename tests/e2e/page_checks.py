"""Measurements the browser tests take on a rendered page: text contrast from the computed colours
(WCAG 2 relative luminance, backgrounds composited up the ancestors), words broken across lines,
and whether elements share a row."""

from __future__ import annotations

# For every visible text node, placeholder and input value under the selectors: its colour, the
# colour behind it (the first opaque background up the tree, translucent ones blended in, opacity
# applied to the text) and their contrast ratio.
CONTRAST_JS = """(selectors) => {
  const parse = (c) => {
    const m = c && c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const backdrop = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];  // the canvas, when nothing up the tree is opaque
    for (const layer of layers.reverse()) bg = over(layer, bg);
    return bg;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && el.checkVisibility();
  };
  const measure = (el, colour, text, out, selector) => {
    const bg = backdrop(el);
    const fg = parse(colour);
    if (!fg) return;
    const seen = over([fg[0], fg[1], fg[2], fg[3] * opacity(el)], bg);
    out.push({selector, text: text.slice(0, 40), fg: seen, bg,
              ratio: Math.round(ratio(seen, bg) * 100) / 100});
  };
  const out = [];
  for (const selector of selectors) {
    const roots = [...document.querySelectorAll(selector)].filter(shown);
    if (!roots.length) out.push({selector, missing: true});
    for (const root of roots) {
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      const done = new Set();
      while (walker.nextNode()) {
        const node = walker.currentNode, el = node.parentElement;
        if (!node.textContent.trim() || done.has(el) || !shown(el)) continue;
        if (el.closest('svg, .katex-mathml')) continue;  // MathML twin of KaTeX output: hidden
        done.add(el);
        measure(el, getComputedStyle(el).color, node.textContent.trim(), out, selector);
      }
      const fields = root.matches('input, textarea') ? [root] : root.querySelectorAll('input, textarea');
      for (const field of fields) {
        if (!shown(field) || ['range', 'checkbox', 'radio'].includes(field.type)) continue;
        if (field.value) measure(field, getComputedStyle(field).color, field.value, out, selector);
        else if (field.placeholder) measure(field, getComputedStyle(field, '::placeholder').color,
                                            field.placeholder, out, selector);
      }
    }
  }
  return out;
}"""

# Words of the element's text that the layout broke across two lines.
BROKEN_WORDS_JS = """(selector) => {
  const root = document.querySelector(selector);
  const broken = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    for (const m of node.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
  return broken;
}"""

# The top and bottom of each element, to tell whether they share a row.
BOXES_JS = """(selectors) => selectors.map(s => {
  const r = document.querySelector(s).getBoundingClientRect();
  return {selector: s, top: r.top, bottom: r.bottom, left: r.left, right: r.right,
          width: r.width, height: r.height};
})"""


def low_contrast(page, selectors: list[str], minimum: float = 4.5) -> list[dict]:
    """Every text under `selectors` whose contrast is under `minimum`, and selectors that matched
    nothing visible (reported with `missing`)."""
    report = page.evaluate(CONTRAST_JS, selectors)
    return [r for r in report if r.get("missing") or r["ratio"] < minimum]


def measured(page, selectors: list[str]) -> list[dict]:
    return page.evaluate(CONTRAST_JS, selectors)


def broken_words(page, selector: str) -> list[str]:
    return page.evaluate(BROKEN_WORDS_JS, selector)


def boxes(page, selectors: list[str]) -> list[dict]:
    return page.evaluate(BOXES_JS, selectors)


def in_one_row(page, selectors: list[str]) -> bool:
    """Whether the elements' boxes overlap vertically, each with each: one row."""
    found = boxes(page, selectors)
    return all(a["top"] < b["bottom"] and b["top"] < a["bottom"] for a in found for b in found)
