"""A newsletter's Markdown as mail HTML and plain text (markdown-it-py, CommonMark, no raw HTML).

markdown-it costs about 35 ms to import, so it is imported here, inside the functions, and
only where a newsletter is rendered or a newsletter click is followed: never by commands that
only load the content (export, stats).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from mailer.content.newsletters import NAMED_LINK

# A link's href after the rewrite: named links `link('name')`, and plain http(s) links.
Rewrite = Callable[[str], str]


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    # No raw HTML: the mail layout's rules (inlined CSS, tables) stay the template's business.
    return MarkdownIt("commonmark", {"html": False})


def _tokens(body: str):
    return _parser().parse(body)


def _links(tokens):
    for token in tokens:
        for child in token.children or ():
            if child.type == "link_open":
                yield child


def named(href: str) -> str | None:
    match = NAMED_LINK.fullmatch(href.strip())
    return match[1] if match else None


def is_plain(href: str) -> bool:
    return href.startswith(("https://", "http://"))


@lru_cache(maxsize=64)
def plain_links(body: str) -> tuple[str, ...]:
    """The body's plain http(s) links, each once, in order of appearance: link N is url-N."""
    found: list[str] = []
    for link in _links(_tokens(body)):
        href = str(link.attrs.get("href", ""))
        if is_plain(href) and href not in found:
            found.append(href)
    return tuple(found)


def plain_link_name(body: str, href: str) -> str:
    return f"url-{plain_links(body).index(href) + 1}"


@dataclass(frozen=True)
class Part:
    """A piece of the body's HTML: rendered HTML, or a button (a paragraph that is only a link),
    which the template draws with its button macro."""

    html: str = ""
    button: tuple[str, str] | None = None  # (href, label)


def render(body: str, rewrite: Rewrite) -> tuple[list[Part], str]:
    """(HTML parts, text) of the body, every link's href passed through `rewrite`. Headings
    move so that the highest is an <h2>: the mail's greeting is its <h1>. A paragraph that is
    only a link is a button."""
    tokens = _tokens(body)
    for link in _links(tokens):
        link.meta["original"] = str(link.attrs.get("href", ""))
        link.attrs["href"] = rewrite(link.meta["original"])
    levels = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
    shift = 2 - min(levels) if levels else 0
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + shift, 6)}"
    parser = _parser()
    parts: list[Part] = []
    pending: list = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        button = _button(tokens[index + 1]) if token.type == "paragraph_open" and token.level == 0 else None
        if button:
            if pending:
                parts.append(Part(parser.renderer.render(pending, parser.options, {})))
                pending = []
            parts.append(Part(button=button))
            index += 3  # paragraph_open, inline, paragraph_close
            continue
        pending.append(token)
        index += 1
    if pending:
        parts.append(Part(parser.renderer.render(pending, parser.options, {})))
    return parts, _text(tokens)


def _button(inline) -> tuple[str, str] | None:
    """(href, label) of an inline that is one link and nothing else."""
    children = [c for c in inline.children or () if not (c.type == "text" and not c.content.strip())]
    if len(children) < 3 or children[0].type != "link_open" or children[-1].type != "link_close":
        return None
    if any(c.type in ("link_open", "link_close") for c in children[1:-1]):
        return None
    label = "".join(c.content for c in children[1:-1])
    return (str(children[0].attrs["href"]), label.strip()) if label.strip() else None


def _text(tokens) -> str:
    """Plain text for the text part: paragraphs apart, "- " items, a link as "text (address)"."""
    out: list[str] = []
    lists: list[list] = []  # per open list: [ordered, number]
    quote = 0
    for token in tokens:
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            lists.append([kind == "ordered_list_open", int(token.attrs.get("start", 1) or 1)])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            if not lists:
                out.append("\n")
        elif kind == "list_item_open":
            ordered, number = lists[-1]
            out.append("  " * (len(lists) - 1) + (f"{number}. " if ordered else "- "))
            lists[-1][1] += 1
        elif kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind == "inline":
            button = _button(token) if not lists and not quote else None
            text = f"{button[1]}:\n{button[0]}" if button else _inline(token.children or ())
            out.append(("> " * quote) + text + "\n")
        elif kind in ("paragraph_close", "heading_close") and not (lists and token.hidden):
            out.append("\n")
        elif kind in ("fence", "code_block"):
            out.append(token.content + "\n")
        elif kind == "hr":
            out.append("---\n\n")
    return "".join(out).strip() + "\n"


def _inline(children) -> str:
    parts: list[str] = []
    href: str | None = None
    original = ""
    start = 0
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak",):
            parts.append("\n")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "link_open":
            href, start = str(child.attrs.get("href", "")), len(parts)
            original = child.meta.get("original", href)
        elif child.type == "link_close" and href is not None:
            label = "".join(parts[start:])
            if label.strip() in (href, original):  # an address written out: the (tracked) address
                parts[start:] = [href]
            else:
                parts.append(f" ({href})")
            href = None
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)
