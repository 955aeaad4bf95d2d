#!/usr/bin/env python3
"""Derive Fjord's request shape tables from kafka-protocol's generated decoders.

Why: kafka-protocol pre-allocates every array with the element count read from
the wire (`Vec::with_capacity(n)`), so a hostile count aborts the process before
any byte check runs. Fjord walks each request body once with these tables before
handing it to kafka-protocol (see protocol/src/schema/). The tables must describe
exactly what kafka-protocol decodes, so they are read from its own generated
`Decodable` impls rather than from the Kafka JSON schemas.

Usage (from the repository root):
    python3 protocol/schema-gen/gen_schema.py \
        ~/.cargo/registry/src/*/kafka-protocol-0.18.0 > protocol/src/schema/tables.rs
    cargo fmt -p fjord-protocol

Regenerate whenever the kafka-protocol version changes; the test
`schema_tables_match_locked_kafka_protocol` fails until you do.
"""
import glob
import os
import re
import sys

MAXV = 32767


def fail(msg):
    sys.stderr.write("gen_schema: " + msg + "\n")
    sys.exit(1)


def parse_cond(cond):
    """Turn a generated version condition into a list of inclusive ranges."""
    cond = cond.strip()
    m = re.fullmatch(r"version >= (\d+)", cond)
    if m:
        return [(int(m.group(1)), MAXV)]
    m = re.fullmatch(r"version <= (\d+)", cond)
    if m:
        return [(0, int(m.group(1)))]
    m = re.fullmatch(r"version == (\d+)", cond)
    if m:
        return [(int(m.group(1)), int(m.group(1)))]
    m = re.fullmatch(r"version >= (\d+) && version <= (\d+)", cond)
    if m:
        return [(int(m.group(1)), int(m.group(2)))]
    fail("unknown condition: " + cond)


def intersect(ranges, lo, hi):
    out = []
    for a, b in ranges:
        a2, b2 = max(a, lo), min(b, hi)
        if a2 <= b2:
            out.append((a2, b2))
    return out


def complement(ranges, lo, hi):
    out = []
    cur = lo
    for a, b in sorted(ranges):
        if a > cur:
            out.append((cur, min(a - 1, hi)))
        cur = max(cur, b + 1)
    if cur <= hi:
        out.append((cur, hi))
    return [r for r in out if r[0] <= r[1]]


def strip_outer(t, prefix):
    if t.startswith(prefix + "<") and t.endswith(">"):
        return t[len(prefix) + 1 : -1], True
    return t, False


def split_args(s):
    """Split `A(B)` into ('A', 'B'); returns (s, None) when there are no parens."""
    i = s.find("(")
    if i < 0 or not s.endswith(")"):
        return s, None
    return s[:i], s[i + 1 : -1]


class Ctx:
    def __init__(self, path):
        self.path = path
        self.structs = {}  # name -> {field: rust type}


def parse_struct_defs(src, ctx):
    for m in re.finditer(r"\npub struct (\w+) \{\n(.*?)\n\}\n", src, re.S):
        fields = {}
        for fm in re.finditer(r"^\s*pub (\w+): (.*),$", m.group(2), re.M):
            fields[fm.group(1)] = fm.group(2).strip()
        ctx.structs[m.group(1)] = fields


def ty_expr(dec, rust_ty, key_of, file_key):
    """Render a Rust `Ty` expression for a generated decoder expression."""
    dec = dec.strip()
    inner, is_opt = strip_outer(rust_ty, "Option")
    head, arg = split_args(dec)
    if head in ("types::Array", "types::CompactArray"):
        elem_ty, is_vec = strip_outer(inner, "Vec")
        if not is_vec:
            fail("array decoder without Vec type: %s / %s" % (dec, rust_ty))
        compact = "true" if head == "types::CompactArray" else "false"
        elem = ty_expr(arg, elem_ty, key_of, file_key)
        return "Ty::Array { compact: %s, nullable: %s, elem: &%s }" % (
            compact,
            "true" if is_opt else "false",
            elem,
        )
    simple = {
        "types::Int8": "Ty::I8",
        "types::Int16": "Ty::I16",
        "types::UInt16": "Ty::U16",
        "types::Int32": "Ty::I32",
        "types::UInt32": "Ty::U32",
        "types::Int64": "Ty::I64",
        "types::Float64": "Ty::F64",
        "types::Boolean": "Ty::Bool",
        "types::Uuid": "Ty::Uuid",
    }
    if dec in simple:
        if is_opt:
            fail("optional fixed-width field: " + rust_ty)
        return simple[dec]
    nullable = "true" if is_opt else "false"
    if dec == "types::String":
        return "Ty::Str { compact: false, nullable: %s }" % nullable
    if dec == "types::CompactString":
        return "Ty::Str { compact: true, nullable: %s }" % nullable
    if dec == "types::Bytes":
        return "Ty::Bytes { compact: false, nullable: %s }" % nullable
    if dec == "types::CompactBytes":
        return "Ty::Bytes { compact: true, nullable: %s }" % nullable
    if dec == "types::Struct { version }":
        if is_opt:
            fail("plain struct decoder with Option type: " + rust_ty)
        return "Ty::Struct(%d)" % key_of(file_key, inner)
    if dec == "types::OptionStruct { version }":
        if not is_opt:
            fail("option struct decoder without Option type: " + rust_ty)
        return "Ty::OptStruct(%d)" % key_of(file_key, inner)
    fail("unknown decoder: " + dec)


DEC_RE = re.compile(r"(.+)\.decode\(buf\)\?")


def parse_if(name, lines, i, ctx):
    """Parse `if COND {` A `} else {` B `}` starting at lines[i].

    Returns ([(ranges, decoder)], index of the closing line). Branches that hold
    a default value instead of a decode produce no entry.
    """
    m = re.fullmatch(r"(?:let \w+ = )?if (version.*) \{", lines[i])
    if not m:
        fail("%s: expected if: %s" % (name, lines[i]))
    cond = parse_cond(m.group(1))
    lo, hi = min(a for a, _ in ctx), max(b for _, b in ctx)
    then_r = [r for c in ctx for r in intersect(cond, *c)]
    else_r = [r for c in ctx for r in intersect(complement(cond, lo, hi), *c)]
    out = []
    then_b, i = parse_branch(name, lines, i + 1, then_r)
    out += then_b
    if lines[i] != "} else {":
        fail("%s: expected else: %s" % (name, lines[i]))
    else_b, i = parse_branch(name, lines, i + 1, else_r)
    out += else_b
    return out, i


def parse_branch(name, lines, i, ctx):
    """A branch body ends at `}`, `};` or `} else {`; returns (entries, end index)."""
    if lines[i].startswith("if version"):
        out, i = parse_if(name, lines, i, ctx)
        if lines[i] != "}":
            fail("%s: nested if not closed: %s" % (name, lines[i]))
        i += 1
        return out, i
    m = DEC_RE.fullmatch(lines[i])
    if m:
        return [(ctx, m.group(1))], i + 1
    while lines[i] not in ("}", "};", "} else {"):
        if ".decode(buf)" in lines[i] or "{" in lines[i]:
            fail("%s: unexpected default expression: %s" % (name, lines[i]))
        i += 1
    return [], i


def parse_decode_body(name, lines, ctx):
    """Returns (lo, hi, fields, tagged_ranges, tags) with decoders still as text."""
    i = 0
    m = re.fullmatch(r"if version < (\d+) \|\| version > (\d+) \{", lines[0])
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
    else:
        m = re.fullmatch(r"if version != (\d+) \{", lines[0])
        if not m:
            fail("%s: no version guard: %s" % (name, lines[0]))
        lo = hi = int(m.group(1))
    if not lines[1].startswith("bail!") or lines[2] != "}":
        fail(name + ": odd version guard")
    i = 3
    fields = []  # (field name, [(lo,hi)], dec)
    tagged_ranges = []
    tags = []  # (tag, field, [(lo,hi)], dec)
    while i < len(lines):
        l = lines[i]
        if l.startswith("Ok(Self"):
            break
        m = re.fullmatch(r"let (\w+) = (.+)\.decode\(buf\)\?;", l)
        if m and m.group(1) != "num_tagged_fields":
            fields.append((m.group(1), [(lo, hi)], m.group(2)))
            i += 1
            continue
        m = re.fullmatch(r"let (\w+) = if (.+) \{", l)
        if m:
            fname = m.group(1)
            branches, i = parse_if(name, lines, i, [(lo, hi)])
            if lines[i] != "};":
                fail("%s.%s: conditional not closed: %s" % (name, fname, lines[i]))
            for rngs, dec in branches:
                if rngs:
                    fields.append((fname, rngs, dec))
            i += 1
            continue
        if re.fullmatch(r"let mut (\w+) = .*;", l) or re.fullmatch(r"let (\w+) = [^.]*;", l):
            i += 1
            continue
        # Tagged-field section, optionally guarded by a version condition.
        guard = None
        m = re.fullmatch(r"if (version.*) \{", l)
        if m and lines[i + 1] == "let num_tagged_fields = types::UnsignedVarInt.decode(buf)?;":
            guard = parse_cond(m.group(1))
            i += 1
            l = lines[i]
        if l == "let num_tagged_fields = types::UnsignedVarInt.decode(buf)?;":
            tagged_ranges = intersect(guard, lo, hi) if guard else [(lo, hi)]
            expect = [
                "for _ in 0..num_tagged_fields {",
                "let tag: u32 = types::UnsignedVarInt.decode(buf)?;",
                "let size: u32 = types::UnsignedVarInt.decode(buf)?;",
            ]
            for k, e in enumerate(expect):
                if lines[i + 1 + k] != e:
                    fail("%s: odd tagged section: %s" % (name, lines[i + 1 + k]))
            i += 4
            if lines[i] == "match tag {":
                i += 1
                while True:
                    am = re.fullmatch(r"(\d+) => \{", lines[i])
                    if not am:
                        break
                    tag = int(am.group(1))
                    i += 1
                    cm = re.fullmatch(r"if (version.*) \{", lines[i])
                    if cm:
                        rng = intersect(parse_cond(cm.group(1)), lo, hi)
                        i += 1
                    else:
                        rng = list(tagged_ranges)
                    am2 = re.fullmatch(r"(\w+) = (.+)\.decode\(buf\)\?;", lines[i])
                    if not am2:
                        fail("%s: odd tag arm: %s" % (name, lines[i]))
                    tags.append((tag, am2.group(1), intersect(rng, lo, hi), am2.group(2)))
                    i += 1
                    if cm:
                        if lines[i] != "} else {" or not lines[i + 1].startswith("bail!") or lines[i + 2] != "}":
                            fail(name + ": odd tag guard")
                        i += 3
                    if lines[i] != "}":
                        fail("%s: tag arm not closed: %s" % (name, lines[i]))
                    i += 1
                if lines[i] != "_ => {":
                    fail("%s: no default tag arm: %s" % (name, lines[i]))
            # Skip to the end of the section; unknown tags carry no structure.
            while i < len(lines) and not lines[i].startswith("Ok(Self"):
                if ".decode(buf)" in lines[i] and "UnsignedVarInt" not in lines[i]:
                    fail("%s: decode after tagged section: %s" % (name, lines[i]))
                i += 1
            continue
        fail("%s: unexpected line: %s" % (name, l))
    return lo, hi, fields, tagged_ranges, tags


def main():
    if len(sys.argv) != 2:
        fail("usage: gen_schema.py <kafka-protocol source dir>")
    root = sys.argv[1]
    cargo = open(os.path.join(root, "Cargo.toml")).read()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    msgs = os.path.join(root, "src", "messages")
    files = sorted(glob.glob(os.path.join(msgs, "*_request.rs")))

    parsed = []  # (file_key, struct name, body lines)
    ctxs = {}
    for path in files:
        file_key = os.path.basename(path)[: -len(".rs")]
        src = open(path).read()
        ctx = Ctx(path)
        parse_struct_defs(src, ctx)
        ctxs[file_key] = ctx
        for m in re.finditer(
            r"impl Decodable for (\w+) \{\n    fn decode<B: ByteBuf>\(buf: &mut B, version: i16\) -> Result<Self> \{\n(.*?)\n    \}\n\}",
            src,
            re.S,
        ):
            lines = [l.strip() for l in m.group(2).split("\n") if l.strip()]
            parsed.append((file_key, m.group(1), lines))

    index = {}
    for n, (fk, name, _) in enumerate(parsed):
        index[(fk, name)] = n

    def key_of(fk, name):
        if (fk, name) not in index:
            fail("struct %s not found in %s" % (name, fk))
        return index[(fk, name)]

    api_src = open(os.path.join(root, "src", "messages.rs")).read()
    roots = []
    for m in re.finditer(r"/// API key for request (\w+)\n\s*(\w+) = (\d+),", api_src):
        struct, variant, key = m.group(1), m.group(2), int(m.group(3))
        fk = re.sub(r"(?<!^)(?=[A-Z])", "_", struct).lower()
        # CamelCase to snake_case differs for acronyms; fall back to a search.
        cands = [k for k in index if k[1] == struct and k[0].endswith("_request")]
        if len(cands) != 1:
            fail("cannot find root struct for " + struct)
        roots.append((key, variant, index[cands[0]]))

    out = []
    w = out.append
    w("// @generated by protocol/schema-gen/gen_schema.py from kafka-protocol %s." % version)
    w("// Do not edit by hand: regenerate when the kafka-protocol version changes.")
    w("//! Request shapes as kafka-protocol decodes them (see `super` for the walker).")
    w("")
    w("use super::{Field, StructDef, Tagged, Ty};")
    w("")
    w('/// The kafka-protocol release these tables were derived from.')
    w('pub(crate) const KAFKA_PROTOCOL_VERSION: &str = "%s";' % version)
    w("")
    w("pub(crate) static STRUCTS: &[StructDef] = &[")
    for n, (fk, name, lines) in enumerate(parsed):
        ctx = ctxs[fk]
        lo, hi, fields, tagged_ranges, tags = parse_decode_body(name, lines, ctx)
        types_ = ctx.structs.get(name)
        if types_ is None:
            fail("no struct def for " + name)
        w("    // %d" % n)
        w("    StructDef {")
        w('        name: "%s",' % name)
        w("        lo: %d," % lo)
        w("        hi: %d," % hi)
        w("        fields: &[")
        for fname, rngs, dec in fields:
            rt = types_.get(fname)
            if rt is None:
                fail("%s.%s has no type" % (name, fname))
            for a, b in rngs:
                w("            Field { lo: %d, hi: %d, ty: %s }," % (a, b, ty_expr(dec, rt, key_of, fk)))
        w("        ],")
        if len(tagged_ranges) > 1:
            fail(name + ": split tagged range")
        if tagged_ranges:
            w("        tagged: Some((%d, %d))," % tagged_ranges[0])
        else:
            w("        tagged: None,")
        w("        tags: &[")
        for tag, fname, rngs, dec in tags:
            rt = types_.get(fname)
            if rt is None:
                fail("%s.%s has no type" % (name, fname))
            if len(rngs) != 1:
                fail("%s.%s: tag has %d ranges" % (name, fname, len(rngs)))
            a, b = rngs[0]
            w("            Tagged { tag: %d, lo: %d, hi: %d, ty: %s }," % (tag, a, b, ty_expr(dec, rt, key_of, fk)))
        w("        ],")
        w("    },")
    w("];")
    w("")
    w("/// `(api key, index into STRUCTS)` of every request body, by key.")
    w("pub(crate) static ROOTS: &[(i16, usize)] = &[")
    for key, variant, idx in sorted(roots):
        w("    (%d, %d), // %s" % (key, idx, variant))
    w("];")
    print("\n".join(out))


if __name__ == "__main__":
    main()
