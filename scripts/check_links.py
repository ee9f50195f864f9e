"""Checks every internal link of a built HTML site: the file each href / src names exists, and so
does the anchor after its ``#``. External links (any URL with a scheme) are not fetched; they are
counted and left alone. Exit status 1 lists the broken ones.

    python scripts/check_links.py docs/_build/html
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[int, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if tag in ("a", "link", "img", "script", "iframe", "source") and attrs.get(key):
                self.links.append((self.getpos()[0], attrs[key]))


def check(root: Path) -> tuple[list[str], int, int]:
    pages = {}
    for path in sorted(root.rglob("*.html")):
        if "_static" in path.relative_to(root).parts:  # the theme's templates, copied as they are
            continue
        page = _Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        pages[path.resolve()] = page
    broken, internal, external = [], 0, 0
    for path, page in pages.items():
        for line, link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                external += 1
                continue
            internal += 1
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(root.resolve())}:{line}: {link}"
            if not target.exists():
                broken.append(f"{where} (no file {target})")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if fragment not in ids:
                    broken.append(f"{where} (no anchor #{fragment})")
    return broken, internal, external


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "docs/_build/html")
    if not (root / "index.html").exists():
        print(f"check_links: {root} holds no built site (index.html)", file=sys.stderr)
        return 2
    broken, internal, external = check(root)
    for line in broken:
        print(f"broken link: {line}", file=sys.stderr)
    print(f"check_links: {internal} internal links checked, {len(broken)} broken; "
          f"{external} external links not fetched")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
