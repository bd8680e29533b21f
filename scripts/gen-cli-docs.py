#!/usr/bin/python3
"""Man pages and shell completions for ktricks, generated from its own --help output.

The CLI (CLI11) is the single source: every option, positional, subcommand, the examples and the exit
status a user sees in `ktricks SUB --help` end up in ktricks-SUB(1) and in the bash, zsh and fish
completions, so none of them can drift from the binary they ship with. Run at build time:

    gen-cli-docs.py KTRICKS_BINARY OUTPUT_DIR

writes OUTPUT_DIR/man/ktricks.1, OUTPUT_DIR/man/ktricks-SUB.1 for each subcommand (and gzipped
copies in OUTPUT_DIR/man-gz), and
OUTPUT_DIR/completions/{ktricks.bash,_ktricks,ktricks.fish}.

Help layout understood (CLI11 2.x): a description line, "Usage: ...", then blocks introduced by a
"Heading:" line. Blocks whose items start with "-" are options (any option group), "Positionals:"
and "Subcommands:" are what they say; anything after them is the footer, itself split into
paragraphs by headings such as "Forms:", "Examples:" and "Exit status:".
"""

import datetime
import gzip
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

HEADING = re.compile(r"^([A-Z][A-Za-z /-]*):(?:\s+(.*))?$")
ITEM = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")
CONTINUATION = re.compile(r"^ {20,}(\S.*)$")


@dataclass
class Option:
    flags: list          # ["-t", "--tcp"]
    argument: str        # "" for a flag, else e.g. "TEXT ..." or "FLOAT:NONNEGATIVE=5"
    description: str


@dataclass
class Help:
    name: str            # "ktricks" or "ktricks once"
    description: str
    usage: str
    options: list = field(default_factory=list)
    positionals: list = field(default_factory=list)   # (name, description)
    subcommands: list = field(default_factory=list)   # (name, description)
    footer: list = field(default_factory=list)        # (heading or "", [lines])


def run_help(binary, args):
    result = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        sys.exit(f"gen-cli-docs: {' '.join([binary, *args, '--help'])} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def parse_items(lines):
    """Two-column items ("  name   description", continuation lines indented) -> [(name, text)]."""
    items = []
    for line in lines:
        if not line.strip():
            continue
        continued = CONTINUATION.match(line)
        if continued and items:
            name, text = items[-1]
            items[-1] = (name, (text + " " + continued.group(1)).strip())
            continue
        match = ITEM.match(line)
        if match:
            items.append((match.group(1).strip(), (match.group(2) or "").strip()))
    return items


def parse_option(name, text):
    first, _, argument = name.partition(" ")
    flags = [flag for flag in first.split(",") if flag.startswith("-")]
    argument = argument.strip()
    for marker in ("REQUIRED", "Excludes:", "Needs:"):
        argument = argument.split(marker)[0].strip()
    return Option(flags, argument, text)


def parse_help(name, text):
    lines = text.rstrip("\n").split("\n")
    description = lines[0].strip() if lines and not lines[0].startswith("Usage:") else ""
    usage = next((line[len("Usage: "):] for line in lines if line.startswith("Usage: ")), name)
    help_ = Help(name, description, usage)
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Usage: ")), 1)

    blocks = []   # (heading, inline text, lines)
    for line in lines[start:]:
        heading = HEADING.match(line)
        if heading and not line.startswith(" "):
            blocks.append([heading.group(1), heading.group(2) or "", []])
        elif blocks:
            blocks[-1][2].append(line)
        elif line.strip():
            blocks.append(["", line.strip(), []])

    in_footer = False
    for heading, inline, body in blocks:
        first_item = next((l for l in body if l.strip()), "")
        if not in_footer and heading == "Positionals":
            help_.positionals = parse_items(body)
        elif not in_footer and heading == "Subcommands":
            help_.subcommands = parse_items(body)
        elif not in_footer and not inline and first_item.startswith("  -"):
            help_.options += [parse_option(n, t) for n, t in parse_items(body)]
        else:
            in_footer = True
            # Free text that follows an options block without a heading (a plain footer line).
            text_lines = ([inline] if inline else []) + [l.rstrip() for l in body]
            while text_lines and not text_lines[-1].strip():
                text_lines.pop()
            help_.footer.append((heading, text_lines))
    return help_


# ---------------------------------------------------------------- man pages

def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # A line starting with . or ' would be a roff request.
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def man_page(help_, section_date, version, subcommand_names):
    title = help_.name.replace(" ", "-")
    out = [f'.TH {title.upper()} 1 "{section_date}" "ktricks {version}" "User Commands"',
           ".SH NAME", f"{roff(title)} \\- {roff(help_.description or 'ktricks')}",
           ".SH SYNOPSIS", f".B {roff(help_.name)}", roff(help_.usage[len(help_.name):].strip())]
    footer = {heading.lower(): lines for heading, lines in help_.footer}
    if "forms" in footer:
        for line in footer["forms"]:
            if line.strip():
                out += [".br", roff(line.strip())]
    out += [".SH DESCRIPTION", roff(help_.description + ".") if help_.description else ""]
    for heading, lines in help_.footer:
        if heading.lower() in ("forms", "examples", "exit status"):
            continue
        out += [".PP"] + ([f".B {roff(heading)}"] + [".br"] if heading else [])
        out += [roff(line.strip()) + "\n.br" if line.strip() else ".PP" for line in lines]
    if help_.positionals:
        out.append(".SH ARGUMENTS")
        for name, text in help_.positionals:
            out += [".TP", f".I {roff(name)}", roff(text)]
    if help_.options:
        out.append(".SH OPTIONS")
        for option in help_.options:
            flags = ", ".join(f"\\fB{roff(flag)}\\fR" for flag in option.flags)
            argument = f" \\fI{roff(option.argument)}\\fR" if option.argument else ""
            out += [".TP", flags + argument, roff(option.description)]
    if help_.subcommands:
        out.append(".SH COMMANDS")
        for name, text in help_.subcommands:
            out += [".TP", f"\\fBktricks {roff(name)}\\fR(1)", roff(text)]
    out.append(".SH EXAMPLES")
    examples = footer.get("examples")
    if not examples:
        examples = [f"  {help_.name} --help"]
    out.append(".nf")
    out += [roff(line.rstrip()) for line in examples]
    out.append(".fi")
    out.append(".SH EXIT STATUS")
    status = footer.get("exit status") or [
        "0 on success. Otherwise a sysexits.h code: 64 usage, 65 bad data, 66 no input,",
        "69 unavailable, 70 internal error, 71 system error, 75 temporary failure, 77 no permission."]
    out += [roff(" ".join(line.strip() for line in status if line.strip()))]
    out.append(".SH SEE ALSO")
    if help_.name == "ktricks":
        out.append(", ".join(f"\\fBktricks\\-{roff(n)}\\fR(1)" for n in subcommand_names))
    else:
        out.append("\\fBktricks\\fR(1); the documentation in /usr/share/doc/ktricks/")
    return "\n".join(line for line in out if line is not None) + "\n"


# ---------------------------------------------------------------- completions

def words(options):
    return [flag for option in options for flag in option.flags]


def bash_completion(top, subs):
    cases = []
    for name, help_ in subs.items():
        takes_value = [flag for option in help_.options if option.argument for flag in option.flags]
        cases.append(f"""    {name})
      opts="{' '.join(words(help_.options))}"
      valued="{' '.join(takes_value)}" ;;""")
    return f"""# bash completion for ktricks (generated from `ktricks --help`; do not edit)
_ktricks() {{
  local cur prev sub opts valued i
  COMPREPLY=()
  cur=${{COMP_WORDS[COMP_CWORD]}}
  prev=${{COMP_WORDS[COMP_CWORD-1]}}
  sub=
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${{COMP_WORDS[i]}} in
      --) return 0 ;;     # after --, the words belong to the command being run
      -*) ;;
      *) sub=${{COMP_WORDS[i]}}; break ;;
    esac
  done
  if [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "{' '.join(subs)} {' '.join(words(top.options))}" -- "$cur"))
    return 0
  fi
  case $sub in
{chr(10).join(cases)}
    *) return 0 ;;
  esac
  if [[ " $valued " == *" $prev "* ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
    return 0
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
  return 0
}}
complete -F _ktricks ktricks
"""


def zsh_quote(text):
    return text.replace("\\", "\\\\").replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")


def zsh_completion(top, subs):
    functions = []
    for name, help_ in subs.items():
        specs = []
        for option in help_.options:
            description = zsh_quote(option.description or option.flags[-1])
            value = ":value:_files" if option.argument else ""
            if len(option.flags) > 1:
                group = " ".join(option.flags)
                specs.append(f"'({group})'{{{','.join(option.flags)}}}'[{description}]{value}'")
            else:
                specs.append(f"'{option.flags[0]}[{description}]{value}'")
        specs.append("'*::argument:_files'")
        functions.append(f"_ktricks_{name.replace('-', '_')}() {{\n  _arguments -s \\\n    " +
                         " \\\n    ".join(specs) + "\n}")
    described = "\n    ".join(f"'{n}:{zsh_quote(h.description)}'" for n, h in subs.items())
    dispatch = "\n".join(f"    {n}) _ktricks_{n.replace('-', '_')} ;;" for n in subs)
    return f"""#compdef ktricks
# zsh completion for ktricks (generated from `ktricks --help`; do not edit)
{chr(10).join(functions)}

_ktricks() {{
  local -a subcommands
  subcommands=(
    {described}
  )
  if (( CURRENT == 2 )); then
    _describe -t commands 'ktricks subcommand' subcommands
    _arguments '--help[print help]' '--version[print version]'
    return
  fi
  case ${{words[2]}} in
{dispatch}
  esac
}}

_ktricks "$@"
"""


def fish_quote(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_completion(top, subs):
    out = ["# fish completion for ktricks (generated from `ktricks --help`; do not edit)",
           "complete -c ktricks -f",
           f"complete -c ktricks -n __fish_use_subcommand -l help -d {fish_quote('Print help')}",
           f"complete -c ktricks -n __fish_use_subcommand -l version -d {fish_quote('Print version')}"]
    for name, help_ in subs.items():
        out.append(f"complete -c ktricks -n __fish_use_subcommand -a {name} -d {fish_quote(help_.description)}")
        for option in help_.options:
            parts = [f"complete -c ktricks -n '__fish_seen_subcommand_from {name}'"]
            for flag in option.flags:
                parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
            if option.argument:
                parts.append("-r -F")
            parts.append(f"-d {fish_quote(option.description[:100])}")
            out.append(" ".join(parts))
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen-cli-docs.py KTRICKS_BINARY OUTPUT_DIR")
    binary, output = sys.argv[1], sys.argv[2]
    top = parse_help("ktricks", run_help(binary, []))
    subs = {name: parse_help(f"ktricks {name}", run_help(binary, [name])) for name, _ in top.subcommands}
    version_line = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.split()
    version = version_line[-1] if version_line else "unknown"
    # Reproducible builds: the date comes from SOURCE_DATE_EPOCH when the packager sets it.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc) if epoch else datetime.datetime.now(datetime.timezone.utc)
    date = when.strftime("%B %Y")

    os.makedirs(f"{output}/man", exist_ok=True)
    os.makedirs(f"{output}/completions", exist_ok=True)
    pages = {"ktricks.1": man_page(top, date, version, list(subs))}
    for name, help_ in subs.items():
        pages[f"ktricks-{name}.1"] = man_page(help_, date, version, list(subs))
    os.makedirs(f"{output}/man-gz", exist_ok=True)
    for page, text in pages.items():
        with open(f"{output}/man/{page}", "w") as f:
            f.write(text)
        # Debian installs man pages compressed; mtime=0 keeps the package reproducible.
        with gzip.GzipFile(f"{output}/man-gz/{page}.gz", "wb", 9, mtime=0) as f:
            f.write(text.encode())
    for file, text in (("ktricks.bash", bash_completion(top, subs)), ("_ktricks", zsh_completion(top, subs)),
                       ("ktricks.fish", fish_completion(top, subs))):
        with open(f"{output}/completions/{file}", "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
