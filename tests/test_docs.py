"""README.md and docs/*.md: every relative link resolves, and every `ltlab ...` command in code
names a real subcommand (read from ltlab.cli's argparse parser) and, after `ltlab train` /
`ltlab eval`, real config keys (ltlab.config.FIELDS, or extra.<name>). Then the checker itself
is shown to catch a planted bad link, subcommand and key."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from conftest import REPO

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.S | re.M)
SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
# `ltlab SUB` where ltlab is the command (.venv/bin/ltlab, $(which ltlab)), not ltlab/x.py, ltlab.fit, "ltlab:"
COMMAND = re.compile(r"(?<![\w.-])ltlab\)?[ \t]+([A-Za-z_][\w-]*)")
# ... and where it is the program, not an argument (`ruff check ltlab tests`, `from ltlab import x`): what
# precedes it on its line is nothing, a prompt, env assignments, a path, `which`, or a shell separator
AS_PROGRAM = re.compile(r"(?:^\s*(?:\$\s+)?|(?:&&|\|\||[;|(]|\bwhich)\s*)"
                        r"(?:[A-Za-z_]\w*=(?:\$\([^)]*\)|\S*)\s+)*(?:\S*/)?$")
TAKES_KEYS = ("train", "eval")
END_OF_COMMAND = re.compile(r"\s(?:#|&&|\|\|?|;)|\n")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _blank(text: str, pattern: re.Pattern) -> str:
    """text with pattern's matches replaced by spaces (newlines kept, so offsets and lines hold)."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def bad_links(path: Path, root: Path) -> list[str]:
    """'file:line: link' for every relative link or image (outside code) whose target is missing."""
    text = path.read_text()
    prose = _blank(_blank(text, FENCE), SPAN)
    out = []
    for m in [*LINK.finditer(prose), *REF_DEF.finditer(prose)]:
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):   # http(s), mailto, anchors
            continue
        file = target.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / file).exists():
            out.append(f"{path.relative_to(root)}:{_line(text, m.start(1))}: broken link '{target}'")
    return out


def code_pieces(text: str):
    """(offset, code) of every fenced block and inline code span, with offsets into text."""
    for m in FENCE.finditer(text):
        body_start = text.index("\n", m.start()) + 1
        yield body_start, text[body_start:m.end()]
    prose = _blank(text, FENCE)
    for m in SPAN.finditer(prose):
        yield m.start(2), m.group(2)


def _tokens(rest: str) -> list[str]:
    """The words of one command line (a value may be quoted: "milestones=[24, 27]")."""
    try:
        return shlex.split(rest, posix=True)
    except ValueError:            # an unbalanced quote in prose: plain words
        return rest.split()


def bad_commands(path: Path, root: Path, subcommands: set, keys: set) -> list[str]:
    """'file:line: token' for every `ltlab SUB` with an unknown SUB, and every key=value after
    `ltlab train` / `ltlab eval` whose key is neither a config field nor extra.<name>."""
    text = path.read_text()
    out = []
    for offset, code in code_pieces(text):
        code = re.sub(r"\\\n", "  ", code)       # continued shell lines: one command, same offsets
        for m in COMMAND.finditer(code):
            if not AS_PROGRAM.search(code[code.rfind("\n", 0, m.start()) + 1:m.start()]):
                continue
            sub, where = m.group(1), f"{path.relative_to(root)}:{_line(text, offset + m.start(1))}"
            if sub not in subcommands:
                out.append(f"{where}: 'ltlab {sub}' is not a subcommand (real: {', '.join(sorted(subcommands))})")
                continue
            if sub not in TAKES_KEYS:
                continue
            rest = code[m.end():]
            end = END_OF_COMMAND.search(rest)
            for tok in _tokens(rest[:end.start()] if end else rest):
                if tok.startswith("-") or "=" not in tok:
                    continue
                key = tok.split("=", 1)[0]
                if not (key in keys or re.fullmatch(r"extra\.[A-Za-z_]\w*", key)):
                    at = re.search(rf"(?<![\w.]){re.escape(key)}=", rest)
                    line = _line(text, offset + m.end() + (at.start() if at else 0))
                    out.append(f"{path.relative_to(root)}:{line}: 'ltlab {sub}' given unknown config key "
                               f"'{key}' (in '{tok}')")
    return out


def real_subcommands() -> set:
    """The subcommands of the parser ltlab.cli builds (whatever its builder function is named)."""
    from ltlab import cli

    for name, fn in sorted(vars(cli).items()):
        if "parser" in name.lower() and callable(fn) and not isinstance(fn, type):
            try:
                parser = fn()
            except TypeError:          # needs arguments: not the builder
                continue
            if isinstance(parser, argparse.ArgumentParser):
                return {choice for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                        for choice in action.choices}
    raise AssertionError("ltlab.cli has no function building its ArgumentParser (looked for *parser*)")


def config_keys() -> set:
    from ltlab.config import FIELDS

    return set(FIELDS)


def test_parser_found():
    subs = real_subcommands()
    assert {"train", "eval", "batch", "archive", "table"} <= subs


def test_relative_links_resolve():
    bad = [b for f in doc_files(REPO) for b in bad_links(f, REPO)]
    assert not bad, "\n".join(bad)


def test_commands_name_real_subcommands_and_keys():
    subs, keys = real_subcommands(), config_keys()
    bad = [b for f in doc_files(REPO) for b in bad_commands(f, REPO, subs, keys)]
    assert not bad, "\n".join(bad)
    # the checker saw the commands at all: the README's tour has `ltlab train` with keys
    readme = (REPO / "README.md").read_text()
    assert "ltlab train dataset=" in readme and (REPO / "docs").is_dir()


def test_readme_is_short_and_every_doc_page_is_linked():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    index = (REPO / "docs" / "README.md").read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"
            assert f"](docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_checker_catches_planted_errors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("ok\n")
    (tmp_path / "README.md").write_text(
        "# t\n"
        "[fine](docs/real.md#a) [web](https://example.org) ![img](docs/real.md)\n"
        "[gone](docs/missing.md) and `[not a link](nowhere.md)` in code\n"
        "```bash\n"
        "ltlab train dataset=demo epochs=2 extra.focal_gamma=2 \\\n"
        "    epoch=3          # a typo on a continued line\n"
        "ltlab trian -c x.yaml\n"
        "```\n"
        "Inline: `ltlab eval RUN --write`, `ltlab/cli.py`, `ltlab.fit`, `ruff check ltlab tests`,\n"
        "`.venv/bin/ltlab tabel`, `X=$(mktemp -d) ltlab tabel`.\n")
    (tmp_path / "docs" / "page.md").write_text("One line.\n\n![fig](img/nope.png)\n")
    subs, keys = {"train", "eval", "table"}, {"dataset", "epochs"}
    links = [b for f in doc_files(tmp_path) for b in bad_links(f, tmp_path)]
    assert links == ["README.md:3: broken link 'docs/missing.md'", "docs/page.md:3: broken link 'img/nope.png'"]
    cmds = [b for f in doc_files(tmp_path) for b in bad_commands(f, tmp_path, subs, keys)]
    assert len(cmds) == 4, cmds
    assert cmds[0] == "README.md:6: 'ltlab train' given unknown config key 'epoch' (in 'epoch=3')"
    assert cmds[1].startswith("README.md:7: 'ltlab trian' is not a subcommand")
    assert cmds[2].startswith("README.md:10: 'ltlab tabel' is not a subcommand")
    assert cmds[3].startswith("README.md:10: 'ltlab tabel' is not a subcommand")
