#!/usr/bin/env python3
"""Writes a man page with scdoc(1): a hand-written head (NAME, DESCRIPTION, ...) and the
parts that must not drift, generated at build time from their sources:

  man.py help PROGRAM HEAD.scd OUT     zerogpud(8): OPTIONS from `PROGRAM --help`
  man.py commands PROGRAM HEAD.scd OUT zerogpu(1): every command's `--help`, verbatim
  man.py config CONFIG.md HEAD.scd OUT zerogpud.conf(5): every section and setting from
                                       docs/configuration.md's tables
  man.py sample CONFIG.md - OUT        the commented sample /etc/zerogpu/zerogpud.conf,
                                       from the same tables
"""
import re
import subprocess
import sys


def scdoc_escape(text):
    # scdoc treats * and _ as emphasis and \\ as an escape.
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_")


def options_from_help(text):
    """The option lines of a --help text, as scdoc: *--opt* ARG, then the description."""
    out, current = [], None
    for line in text.splitlines():
        m = re.match(r"^  (--?[a-z][a-z0-9-]*(?:, --[a-z-]+)?)((?: [A-Za-z|:.\[\]_-]+)?)\s{2,}(.*)$",
                     line)
        m2 = re.match(r"^  (--?[a-z][a-z0-9-]*)( [A-Za-z|:._-]+)?\s*(.*)$", line)
        if m or (m2 and line.startswith("  -")):
            if current:
                out.append(current)
            mm = m or m2
            current = [mm.group(1), (mm.group(2) or "").strip(), [mm.group(3).strip()]]
        elif current and line.startswith("    ") and line.strip():
            current[2].append(line.strip())
        elif not line.strip() or not line.startswith(" "):
            if current:
                out.append(current)
                current = None
            if line.strip() and not line.startswith("Usage") and line.endswith(":"):
                out.append(line[:-1])  # a group heading
    if current:
        out.append(current)
    lines = []
    for item in out:
        if isinstance(item, str):
            lines += ["", f"## {item.upper()}", ""]
            continue
        opt, arg, desc = item
        head = f"*{scdoc_escape(opt)}*" + (f" _{scdoc_escape(arg)}_" if arg else "")
        lines += [head, "\t" + scdoc_escape(" ".join(d for d in desc if d)), ""]
    return "\n".join(lines)


def verbatim(text):
    return "```\n" + text.rstrip("\n") + "\n```\n"


def config_from_markdown(md):
    """Every `## [section]` of configuration.md with its table rows: key, option, default,
    meaning; the prose between heading and table as the section's text."""
    lines, section, code = [], None, False
    for line in md.splitlines():
        if section and line.startswith("```"):
            code = not code  # a fenced block: scdoc's literal block
            lines.append("```")
            continue
        if code:
            lines.append(line)
            continue
        h = re.match(r"^## (\[[a-z]+\])$", line)
        if h:
            section = h.group(1)
            lines += ["", f"## {section}", ""]
            continue
        if line.startswith("## "):
            section = None
            continue
        if not section:
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] in ("key", "") or set(cells[0]) <= set("-"):
                continue
            key = cells[0].strip("`")
            rest = [re.sub(r"`([^`]*)`", r"\1", c) for c in cells[1:]]
            rest = [re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", c) for c in rest]
            option, default = rest[0], rest[1] if len(rest) > 1 else ""
            meaning = rest[2] if len(rest) > 2 else ""
            lines += [f"*{scdoc_escape(key)}* (option *{scdoc_escape(option)}*, default "
                      f"{scdoc_escape(default)})", "\t" + scdoc_escape(meaning or "as above"), ""]
        elif not line.strip():
            lines.append("")  # paragraphs stay apart, and apart from the entries
        else:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)
            lines.append(scdoc_escape(re.sub(r"`([^`]*)`", r"\1", text)))
    return "\n".join(lines)


def settings_table(md):
    """[(section, key, option, default, meaning)] from configuration.md's tables."""
    rows, section = [], None
    for line in md.splitlines():
        h = re.match(r"^## \[([a-z]+)\]$", line)
        if h:
            section = h.group(1)
        elif line.startswith("## "):
            section = None
        elif section and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            plain = [re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", re.sub(r"`([^`]*)`", r"\1", c))
                     for c in cells]
            rows.append((section, plain[0], plain[1], plain[2] if len(plain) > 2 else "",
                         plain[3] if len(plain) > 3 else ""))
    return rows


def wrap(text, prefix, width=88):
    out, line = [], prefix
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip(";  "):
            out.append(line.rstrip())
            line = prefix
        line += word + " "
    out.append(line.rstrip())
    return out


def sample(md):
    """Every setting, commented out, with what it does and its default."""
    lines = ["; zerogpud's settings (zerogpud.conf(5), docs/configuration.md). Every setting",
             "; is listed here, commented out at its default; uncomment a line to change it.",
             "; Options on zerogpud's command line win over this file.",
             "; This file is made from docs/configuration.md when zerogpu is built."]
    section = None
    for sec, key, option, default, meaning in settings_table(md):
        if sec != section:
            section = sec
            lines += ["", f"[{sec}]"]
        lines.append("")
        about = f"{meaning} (option {option}; default: {default})" if meaning else \
            f"option {option}; default: {default}"
        lines += wrap(about, ";   ")
        literal = re.fullmatch(r"[A-Za-z0-9_./:-]+", default or "") and default != "none"
        value = default if literal else ""
        lines.append(f"; {key} = {value}".rstrip())
    lines += ["", "[apps]", ";   Which local users act for an app, its cgroup, and the GPU memory",
              ";   its spaces calls need (docs/configuration.md#apps):",
              "; painter users = www-data, 1001", "; painter cgroup = /system.slice/painter.service",
              "; painter memory = 12G"]
    return "\n".join(lines) + "\n"


def main():
    mode, source, head, out = sys.argv[1:5]
    if mode == "sample":
        open(out, "w").write(sample(open(source).read()))
        return
    body = open(head).read()
    if mode == "help":
        text = subprocess.run([source, "--help"], capture_output=True, text=True,
                              check=True).stdout
        body = body.replace("@OPTIONS@", options_from_help(text))
    elif mode == "commands":
        top = subprocess.run([source, "--help"], capture_output=True, text=True,
                             check=True).stdout
        commands = re.findall(r"^  ([a-z]+)\s{2,}", top.split("Commands:")[1].split("\n\n")[0],
                              re.M)
        parts = []
        for cmd in commands:
            text = subprocess.run([source, cmd, "--help"], capture_output=True,
                                  text=True).stdout
            parts += [f"## zerogpu {cmd}", "", verbatim(text)]
        body = body.replace("@COMMANDS@", "\n".join(parts))
    elif mode == "config":
        body = body.replace("@SETTINGS@", config_from_markdown(open(source).read()))
    page = subprocess.run(["scdoc"], input=body, capture_output=True, text=True)
    if page.returncode:
        sys.exit(f"man.py: scdoc refused {head}: {page.stderr}")
    open(out, "w").write(page.stdout)


if __name__ == "__main__":
    main()
