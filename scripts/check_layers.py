#!/usr/bin/env python3
"""Fails when a host layer includes a header it may not use.

Layers (STYLE.md): domain (std only) <- ports <- services <- adapters
(config, plugins, http, worker, store) <- app. Third-party headers are
allowed only in the adapter layers that wrap them. Usage: check_layers.py ROOT
"""
import pathlib
import re
import sys

# layer -> (kiln layers it may include, third-party include prefixes it may use)
ALLOWED = {
    "domain": ({"domain"}, set()),
    "ports": ({"domain", "ports"}, set()),
    "services": ({"domain", "ports", "services"}, set()),
    "codec": ({"domain", "codec"}, {"nlohmann/"}),
    "config": ({"domain", "config"}, {"nlohmann/", "yaml-cpp/"}),
    "plugins": ({"domain", "ports", "config", "plugins", "abi"}, {"nlohmann/", "boost/dll"}),
    "http": ({"domain", "ports", "services", "codec", "http"}, {"nlohmann/", "Poco/"}),
    "worker": ({"domain", "ports", "services", "plugins", "codec", "git", "worker"}, {"nlohmann/"}),
    "store": ({"domain", "ports", "codec", "store"}, {"nlohmann/", "pqxx/", "sqlite3.h", "libpq-fe.h"}),
    "process": ({"domain", "process"}, set()),
    "git": ({"domain", "git"}, {"git2"}),
    "app": (None, None),  # the composition root may wire anything
}
THIRD_PARTY = ("nlohmann/", "yaml-cpp/", "Poco/", "boost/", "pqxx/", "git2", "sqlite3.h",
               "kainjow/", "gtest/", "gmock/")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def kiln_layer(header):
    if header in ("kiln/plugin.h", "kiln/sdk.hpp"):
        return "abi"
    m = re.match(r"kiln/([a-z_]+)/", header)
    return m.group(1) if m else None


def main(root):
    host = pathlib.Path(root) / "host"
    problems = []
    for layer_dir in sorted(p for p in host.iterdir() if p.is_dir()):
        layer = layer_dir.name
        if layer not in ALLOWED:
            problems.append(f"{layer_dir}: unknown layer; add it to scripts/check_layers.py")
            continue
        kiln_ok, third_ok = ALLOWED[layer]
        if kiln_ok is None:
            continue
        for f in sorted(layer_dir.rglob("*")):
            if f.suffix not in (".h", ".hpp", ".cc", ".cpp"):
                continue
            text = f.read_text(encoding="utf-8")
            for m in INCLUDE.finditer(text):
                inc = m.group(1)
                line = text.count("\n", 0, m.start()) + 1
                kl = kiln_layer(inc)
                if kl is not None and kl not in kiln_ok:
                    problems.append(f"{f}:{line}: layer '{layer}' may not include {inc} "
                                    f"(allowed kiln layers: {', '.join(sorted(kiln_ok))})")
                elif inc.startswith(THIRD_PARTY) and not inc.startswith(tuple(third_ok)):
                    problems.append(f"{f}:{line}: layer '{layer}' may not include third-party "
                                    f"header {inc}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
