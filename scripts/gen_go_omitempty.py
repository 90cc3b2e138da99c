#!/usr/bin/env python3
"""Generates apiserver/src/protobuf/go_omitempty.txt: for each Go struct of the API types we serve (named as
its protobuf message, e.g. `k8s.io.api.apps.v1.DeploymentSpec`), the JSON names of its non-pointer scalar
fields (string, bool, integer and float kinds, and named types over them such as `type Protocol string`)
whose json tag has `omitempty`. kube-apiserver decodes every request into these structs, so such a field
holding its zero value is absent from what it stores and serves; pointer fields and fields without
omitempty keep their zero.

The facts are read from upstream's Go sources at a tag, straight out of git repositories (for example the
snapshots `git clone --bare` makes of github.com/kubernetes/{api,apimachinery,apiextensions-apiserver}):

    scripts/gen_go_omitempty.py --api API.git --apimachinery APIMACHINERY.git \
        --apiextensions APIEXTENSIONS.git --tag v0.32.13 > apiserver/src/protobuf/go_omitempty.txt

The parser knows just enough Go for gofmt-formatted type declarations.
"""

import argparse
import re
import subprocess
import sys

# (repository option, import path prefix, packages whose structs are emitted, packages read for named types only)
API_PACKAGES = [
    "core/v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "rbac/v1",
    "coordination/v1",
    "discovery/v1",
    "autoscaling/v1",
    "authentication/v1",
    "authorization/v1",
]
APIMACHINERY_STRUCTS = ["pkg/apis/meta/v1"]
# Named scalar types other packages refer to (`types.UID`); their structs are not messages of ours or are
# encoded specially (IntOrString, Quantity).
APIMACHINERY_NAMED = ["pkg/types", "pkg/util/intstr", "pkg/api/resource"]
APIEXTENSIONS_STRUCTS = ["pkg/apis/apiextensions/v1"]

SCALARS = {
    "string": "string",
    "bool": "bool",
    "float32": "float",
    "float64": "float",
}
for t in ["int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "byte", "rune"]:
    SCALARS[t] = "int"
# Named scalars outside the parsed packages.
EXTERNAL_NAMED = {("time", "Duration"): "int"}

SKIP_FILE = re.compile(r"(_test\.go|^zz_generated.*|^generated\.pb\.go|_swagger_doc_generated\.go|fuzz.*\.go)$")


def git(git_dir, *args):
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True, text=True).stdout


def strip_comments(src):
    """Replaces comments by blanks (newlines kept), leaving string and rune literals alone."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c in "\"'`":
            j = i + 1
            while j < n and src[j] != c:
                if c != "`" and src[j] == "\\":
                    j += 1
                j += 1
            out.append(src[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def imports(src):
    """Import alias -> import path of one file."""
    found = {}
    specs = re.findall(r"^import\s+(\w+\s+)?\"([^\"]+)\"", src, re.M)
    for block in re.findall(r"^import\s*\((.*?)^\)", src, re.M | re.S):
        specs += re.findall(r"^\s*(\w+\s+)?\"([^\"]+)\"", block, re.M)
    for alias, path in specs:
        alias = alias.strip() or path.rsplit("/", 1)[-1]
        found[alias] = path
    return found


class Package:
    def __init__(self, path):
        self.path = path
        self.named = {}  # name -> (underlying type expression, file imports)
        self.structs = {}  # name -> ([(go name, type expression, json tag or None)], file imports)
        self.order = []


def parse_file(pkg, src):
    src = strip_comments(src)
    imps = imports(src)
    lines = src.split("\n")
    i = 0
    in_block = False
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not in_block:
            if line == "type (":
                in_block = True
                continue
            if not line.startswith("type "):
                continue
            decl = line[5:].strip()
        else:
            if line == ")":
                in_block = False
                continue
            decl = line
        m = re.match(r"^(\w+)\s+struct\s*\{\s*$", decl)
        if m:
            fields, depth = [], 1
            while i < len(lines) and depth > 0:
                f = lines[i].strip()
                i += 1
                depth += f.count("{") - f.count("}")
                if depth != 1 or not f or f == "}":
                    continue
                fields.append(parse_field(f))
            pkg.structs[m.group(1)] = ([f for f in fields if f], imps)
            pkg.order.append(m.group(1))
            continue
        m = re.match(r"^(\w+)\s*=?\s*([\w.\[\]*]+)\s*$", decl)
        if m:
            pkg.named[m.group(1)] = (m.group(2), imps)


def parse_field(line):
    tag = None
    m = re.search(r"`([^`]*)`\s*$", line)
    if m:
        line = line[: m.start()].strip()
        jt = re.search(r'json:"([^"]*)"', m.group(1))
        tag = jt.group(1) if jt else None
    parts = line.split()
    if not parts:
        return None
    if len(parts) == 1:
        return (None, parts[0], tag)  # embedded
    return (parts[0].rstrip(","), parts[-1], tag)


def load(git_dir, tag, prefix, pkg_dir):
    pkg = Package(f"{prefix}/{pkg_dir}")
    for name in git(git_dir, "ls-tree", "--name-only", f"{tag}:{pkg_dir}").split():
        if not name.endswith(".go") or SKIP_FILE.search(name):
            continue
        parse_file(pkg, git(git_dir, "show", f"{tag}:{pkg_dir}/{name}"))
    if not pkg.named and not pkg.structs:
        sys.exit(f"nothing parsed in {git_dir} {tag}:{pkg_dir}")
    return pkg


def scalar_kind(packages, pkg, expr, imps, seen=()):
    """The scalar kind of a non-pointer type expression, or None (pointers, slices, maps, structs)."""
    if expr in SCALARS:
        return SCALARS[expr]
    if not re.fullmatch(r"\w+(\.\w+)?", expr):
        return None
    if "." in expr:
        alias, name = expr.split(".")
        path = imps.get(alias)
        if path is None:
            return None
        if (alias, name) in EXTERNAL_NAMED and path == alias:
            return EXTERNAL_NAMED[(alias, name)]
        target = packages.get(path)
    else:
        name, target = expr, pkg
    if target is None or (target.path, name) in seen or name not in target.named:
        return None
    under, under_imps = target.named[name]
    return scalar_kind(packages, target, under, under_imps, seen + ((target.path, name),))


def proto_package(import_path):
    return import_path.replace("/", ".").replace("-", "_")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", required=True, help="git directory of k8s.io/api")
    ap.add_argument("--apimachinery", required=True, help="git directory of k8s.io/apimachinery")
    ap.add_argument("--apiextensions", required=True, help="git directory of k8s.io/apiextensions-apiserver")
    ap.add_argument("--tag", required=True, help="the tag to read in all three, e.g. v0.32.13")
    a = ap.parse_args()
    emitted, packages = [], {}
    sources = [(a.api, "k8s.io/api", d, True) for d in API_PACKAGES]
    sources += [(a.apimachinery, "k8s.io/apimachinery", d, True) for d in APIMACHINERY_STRUCTS]
    sources += [(a.apimachinery, "k8s.io/apimachinery", d, False) for d in APIMACHINERY_NAMED]
    sources += [(a.apiextensions, "k8s.io/apiextensions-apiserver", d, True) for d in APIEXTENSIONS_STRUCTS]
    for git_dir, prefix, d, emit in sources:
        pkg = load(git_dir, a.tag, prefix, d)
        packages[pkg.path] = pkg
        if emit:
            emitted.append(pkg)
    print(f"# Generated by scripts/gen_go_omitempty.py from k8s.io/api, k8s.io/apimachinery and")
    print(f"# k8s.io/apiextensions-apiserver at {a.tag}; do not edit.")
    print("# Per Go struct (its protobuf message name): the JSON names of its non-pointer scalar fields with")
    print("# omitempty, which a Go round trip drops when they hold their zero value.")
    for pkg in emitted:
        for name in pkg.order:
            fields, imps = pkg.structs[name]
            listed = []
            for go_name, expr, tag in fields:
                if go_name is None or tag is None or tag.split(",")[0] == "-":
                    continue
                opts = tag.split(",")
                if "omitempty" not in opts[1:]:
                    continue
                if scalar_kind(packages, pkg, expr, imps) is None:
                    continue
                listed.append(opts[0] or go_name)
            print(" ".join([f"{proto_package(pkg.path)}.{name}", *listed]))


if __name__ == "__main__":
    main()
