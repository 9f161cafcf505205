"""``keyringctl completion bash|zsh|fish``: a completion script generated from the parser itself.

The command tree is read from argparse (commands and their options), so a new
command completes without touching this file. zsh loads the bash script
through ``bashcompinit``.
"""

from __future__ import annotations

import argparse

from .commands import Context, Subparsers, leaf

SHELLS = ("bash", "zsh", "fish")


def register(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    command = leaf(groups, "completion", "print a shell completion script",
                   "source <(keyringctl completion bash)          # bash, in ~/.bashrc\n"
                   "source <(keyringctl completion zsh)           # zsh, in ~/.zshrc\n"
                   "keyringctl completion fish > ~/.config/fish/completions/keyringctl.fish",
                   print_script, common)
    command.add_argument("shell", choices=SHELLS)
    command.set_defaults(offline=True)


def tree(parser: argparse.ArgumentParser, path: str = "") -> dict[str, list[str]]:
    """Each command path ("" for the top, "keys", "keys add"...) -> the words that may follow it."""
    words: dict[str, list[str]] = {path: []}
    for action in parser._actions:  # argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                words[path].append(name)
                words.update(tree(child, f"{path} {name}".strip()))
        elif action.option_strings:
            words[path].extend(option for option in action.option_strings if option.startswith("--"))
        elif action.choices:
            words[path].extend(str(choice) for choice in action.choices)
    return words


def bash(words: dict[str, list[str]]) -> str:
    cases = "\n".join(f'        "{path}") echo "{" ".join(found)}" ;;' for path, found in words.items())
    return f"""# keyringctl completion for bash (zsh: through bashcompinit)
_keyringctl_words() {{
    case "$1" in
{cases}
    esac
}}
_keyringctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" word
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        [[ "$word" != -* && -n "$(_keyringctl_words "${{path:+$path }}$word")" ]] && path="${{path:+$path }}$word"
    done
    COMPREPLY=($(compgen -W "$(_keyringctl_words "$path")" -- "$cur"))
}}
complete -o default -F _keyringctl keyringctl
"""


def zsh(words: dict[str, list[str]]) -> str:
    return "# keyringctl completion for zsh\nautoload -U +X bashcompinit && bashcompinit\n" + bash(words)


def fish(words: dict[str, list[str]]) -> str:
    """fish's own idiom: a condition per command path on the subcommands seen so far."""
    lines = ["# keyringctl completion for fish", "complete -c keyringctl -f"]
    for path, found in words.items():
        parts = path.split()
        commands = [word for word in found if not word.startswith("-")]
        if not parts:
            condition = "__fish_use_subcommand"
        elif len(parts) == 1 and f"{path} {commands[0] if commands else ''}".strip() in words:
            seen = f"__fish_seen_subcommand_from {parts[0]}"
            condition = f"{seen}; and not __fish_seen_subcommand_from {' '.join(commands)}"
        else:
            condition = "; and ".join(f"__fish_seen_subcommand_from {part}" for part in parts)
        for word in found:
            argument = f"-l {word[2:]}" if word.startswith("--") else f"-a {word}"
            lines.append(f'complete -c keyringctl -n "{condition}" {argument}')
    return "\n".join(lines) + "\n"


def print_script(args: argparse.Namespace, ctx: Context) -> int:
    parser: argparse.ArgumentParser = args.root_parser
    words = tree(parser)
    ctx.output.out.write({"bash": bash, "zsh": zsh, "fish": fish}[args.shell](words))
    return 0
