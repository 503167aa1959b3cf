#!/usr/bin/env python3
"""Writes the fuzz seed corpora (committed) from the repository's PTX fixtures:
seeds/ptx (each kernel of every fixture as a module of its own: the header, the module's
variables and declarations, the functions it calls, the kernel; small inputs keep the
fuzzer fast), seeds/link (modules that link, NUL-separated) and seeds/printf (the
fixtures' printf format strings, NUL, argument bytes). Files named found-* are inputs the
fuzzer found, kept as regression seeds.

    backend/ptx/fuzz/make-seeds.py
"""
import glob
import os
import re
import struct

here = os.path.dirname(os.path.abspath(__file__))
kernels = os.path.join(here, "..", "..", "..", "tests", "kernels")
out = {d: os.path.join(here, "seeds", d) for d in ("ptx", "link", "printf")}
for d in out.values():
    os.makedirs(d, exist_ok=True)
    for f in glob.glob(os.path.join(d, "*")):
        # found-*: inputs the fuzzer found (and that were fixed) stay as regression seeds.
        if not os.path.basename(f).startswith("found-"):
            os.remove(f)


def chunks(text):
    """Top-level pieces of a PTX module: (kind, name, text)."""
    text = re.sub(r"//[^\n]*", "", text)
    i, out = 0, []
    while i < len(text):
        m = re.compile(r"\S").search(text, i)
        if not m:
            break
        i = m.start()
        head = re.match(r"(\.(?:visible|extern|weak)\s+)*\.(entry|func)\b", text[i:])
        if head:
            name = re.search(r"([A-Za-z_$][\w$]*)\s*\(", text[i + head.end():]) if head.group(2) == "func" else None
            if head.group(2) == "func":
                rest = text[i + head.end():]
                # `.func (.param ...) name (` or `.func name(`
                nm = re.match(r"\s*(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)", rest)
                fname = nm.group(1)
            else:
                fname = re.match(r"\s*([A-Za-z_$][\w$]*)", text[i + head.end():]).group(1)
            semi = text.find(";", i)
            brace = text.find("{", i)
            if brace == -1 or (semi != -1 and semi < brace and text[i:semi].count("(") == text[i:semi].count(")")):
                out.append(("decl", fname, text[i:semi + 1]))
                i = semi + 1
                continue
            depth, j = 0, brace
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append((head.group(2), fname, text[i:j + 1]))
            i = j + 1
        else:
            semi = text.find(";", i)
            if semi == -1:
                break
            out.append(("dir", None, text[i:semi + 1]))
            i = semi + 1
    return out


for f in sorted(glob.glob(os.path.join(kernels, "*.ptx")) + glob.glob(os.path.join(kernels, "nvcc", "*.ptx"))):
    parts = chunks(open(f).read())
    header = "\n".join(t for k, _, t in parts if k in ("dir", "decl"))
    funcs = {n: t for k, n, t in parts if k == "func"}
    stem = os.path.splitext(os.path.basename(f))[0]
    for idx, (k, name, body) in enumerate(parts):
        if k != "entry":
            continue
        need, todo = [], [body]
        while todo:
            t = todo.pop()
            for fn, ft in funcs.items():
                if fn not in need and re.search(r"\b" + re.escape(fn) + r"\b", t):
                    need.append(fn)
                    todo.append(ft)
        text = header + "\n" + "\n".join(funcs[n] for n in reversed(need)) + "\n" + body + "\n"
        if len(text) < 16_000:
            open(os.path.join(out["ptx"], f"{stem}-{idx}.ptx"), "w").write(text)
a = open(os.path.join(kernels, "nvcc", "link_a.ptx"), "rb").read()
b = open(os.path.join(kernels, "nvcc", "link_b.ptx"), "rb").read()
d = open(os.path.join(kernels, "nvcc", "link_dup.ptx"), "rb").read()
open(os.path.join(out["link"], "a_b"), "wb").write(a + b"\0" + b)
open(os.path.join(out["link"], "a_b_dup"), "wb").write(a + b"\0" + b + b"\0" + d)
text = open(os.path.join(kernels, "nvcc", "printf.ptx")).read()
args = struct.pack("<iiiiiid", 42, -7, 255, 8, 6, 7, 3.25) + struct.pack("<QQ", 0x1001, 0)
for k, m in enumerate(re.finditer(r"\$str(?:\$\d+)?\[\d+\] = \{([^}]*)\}", text)):
    fmt = bytes(int(x) for x in m.group(1).split(",")).rstrip(b"\0")
    open(os.path.join(out["printf"], f"fmt{k}"), "wb").write(fmt + b"\0" + args)
print("seeds:", {k: len(os.listdir(v)) for k, v in out.items()})
