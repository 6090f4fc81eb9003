#!/usr/bin/env python3
"""man_drift.py SOURCE_ROOT BUILD_ROOT: the man pages (docs/man/*.scd) must
mention every CLI command and subcommand (`fleetgate commands`), every option
each one's --help lists, every option of fleetgated and fleetgate-agent, and
every config key the parsers accept (the *_keys tables of gateway/config.c
and agents/agent_config.c). Prints what is missing where; exit 1 if anything
is. It also proves on a copy that a page with a key taken out fails."""
import re
import subprocess
import sys

src, build = sys.argv[1], sys.argv[2]
cli = build + "/gateway/fleetgate"


def page(name):
    with open(f"{src}/docs/man/{name}.scd") as f:
        return f.read()


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def options(help_text):
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text)))


def keys(path):
    """Every key of the static const char *const *_keys[] tables of path."""
    with open(path) as f:
        text = f.read()
    out = []
    for body in re.findall(r"_keys\[\]\s*=\s*\{(.*?)\};", text, re.S):
        out += re.findall(r'"([a-z0-9_]+)"', body)
    return sorted(set(out))


def check(text, want, what):
    """(page, item) pairs of want missing from text; want are (item, bold?)"""
    missing = []
    for item, bold in want:
        needle = f"*{item}*" if bold else item
        if needle not in text:
            missing.append(f"{what}: {item}")
    return missing


def wanted():
    w = {}
    cmds = [c for c in run(cli, "commands").splitlines() if c]
    assert len(cmds) > 10, cmds
    w["fleetgate.1"] = [(c, True) for c in cmds]
    for c in cmds:
        w["fleetgate.1"] += [(o, False) for o in options(run(cli, *c.split(), "--help"))]
    w["fleetgated.8"] = [(o, False) for o in options(run(build + "/gateway/fleetgated", "--help"))]
    w["fleetgate-agent.8"] = [(o, False) for o in options(run(build + "/agents/fleetgate-agent", "--help"))]
    w["fleetgated.conf.5"] = [(k, True) for k in keys(src + "/gateway/config.c")]
    w["fleetgate-agent.conf.5"] = [(k, True) for k in keys(src + "/agents/agent_config.c")]
    for name in ("fleetgated.conf.5", "fleetgate-agent.conf.5"):
        assert len(w[name]) > 5, (name, w[name])
    return w


w = wanted()
missing = []
for name, want in w.items():
    missing += check(page(name), want, name)
for m in missing:
    print(f"missing from docs/man/{m.split(':')[0]}.scd:{m.split(':', 1)[1]}")

# The check itself: a page without one of its keys must fail.
text = page("fleetgated.conf.5").replace("*sandbox*", "sandbox")
if not check(text, w["fleetgated.conf.5"], "x"):
    print("the drift check did not notice *sandbox* missing from fleetgated.conf.5")
    missing.append("self-check")
text = page("fleetgate.1").replace("*token revoke*", "token")
if not check(text, w["fleetgate.1"], "x"):
    print("the drift check did not notice *token revoke* missing from fleetgate.1")
    missing.append("self-check")

print(f"{sum(len(v) for v in w.values())} items checked, {len(missing)} missing")
sys.exit(1 if missing else 0)
