//! The tables must describe exactly what kafka-protocol decodes. These tests
//! generate random well-formed bodies from the tables for every API and
//! version, and require kafka-protocol to decode each one completely, the walk
//! to accept it, and the walk to accept kafka-protocol's re-encoding too.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{StructDef, Ty, root_for, structs, validate};

fn put_uvarint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn len_prefix(&mut self, out: &mut BytesMut, compact: bool, wide: bool, len: Option<usize>) {
        match (compact, len) {
            (true, None) => put_uvarint(out, 0),
            (true, Some(n)) => put_uvarint(out, n as u32 + 1),
            (false, None) if wide => out.put_i32(-1),
            (false, None) => out.put_i16(-1),
            (false, Some(n)) if wide => out.put_i32(n as i32),
            (false, Some(n)) => out.put_i16(n as i16),
        }
    }

    fn ty(&mut self, ty: &Ty, version: i16, out: &mut BytesMut, depth: usize) {
        match *ty {
            Ty::I8 => out.put_i8(self.rng.r#gen()),
            Ty::Bool => out.put_u8(self.rng.gen_range(0..2)),
            Ty::I16 => out.put_i16(self.rng.r#gen()),
            Ty::U16 => out.put_u16(self.rng.r#gen()),
            Ty::I32 => out.put_i32(self.rng.r#gen()),
            Ty::U32 => out.put_u32(self.rng.r#gen()),
            Ty::I64 => out.put_i64(self.rng.r#gen()),
            // Finite values only, so decoded messages compare equal.
            Ty::F64 => out.put_f64(f64::from(self.rng.r#gen::<i32>()) / 7.0),
            Ty::Uuid => out.put_u128(self.rng.r#gen()),
            Ty::Str { compact, nullable } => {
                if nullable && self.rng.gen_bool(0.15) {
                    self.len_prefix(out, compact, false, None);
                } else {
                    let n = self.rng.gen_range(0..6);
                    self.len_prefix(out, compact, false, Some(n));
                    for _ in 0..n {
                        out.put_u8(self.rng.gen_range(b'a'..=b'z'));
                    }
                }
            }
            Ty::Bytes { compact, nullable } => {
                if nullable && self.rng.gen_bool(0.15) {
                    self.len_prefix(out, compact, true, None);
                } else {
                    let n = self.rng.gen_range(0..9);
                    self.len_prefix(out, compact, true, Some(n));
                    for _ in 0..n {
                        out.put_u8(self.rng.r#gen());
                    }
                }
            }
            Ty::Array {
                compact,
                nullable,
                elem,
            } => {
                if nullable && self.rng.gen_bool(0.15) {
                    self.len_prefix(out, compact, true, None);
                } else {
                    let n = if depth > 5 {
                        0
                    } else {
                        self.rng.gen_range(0..4)
                    };
                    self.len_prefix(out, compact, true, Some(n));
                    for _ in 0..n {
                        self.ty(elem, version, out, depth + 1);
                    }
                }
            }
            Ty::Struct(idx) => self.structure(&structs()[idx], version, out, depth + 1),
            Ty::OptStruct(idx) => {
                if self.rng.gen_bool(0.5) {
                    out.put_i8(1);
                    self.structure(&structs()[idx], version, out, depth + 1);
                } else {
                    out.put_i8(-1);
                }
            }
        }
    }

    fn structure(&mut self, s: &StructDef, version: i16, out: &mut BytesMut, depth: usize) {
        for f in s.fields {
            if f.lo <= version && version <= f.hi {
                self.ty(&f.ty, version, out, depth);
            }
        }
        if !s.has_tagged_section(version) {
            return;
        }
        let mut entries: Vec<(u32, BytesMut)> = Vec::new();
        for t in s.tags {
            if t.lo <= version && version <= t.hi && self.rng.gen_bool(0.5) {
                let mut value = BytesMut::new();
                self.ty(&t.ty, version, &mut value, depth + 1);
                entries.push((t.tag, value));
            }
        }
        if self.rng.gen_bool(0.3) {
            let mut value = BytesMut::new();
            for _ in 0..self.rng.gen_range(0..5) {
                value.put_u8(self.rng.r#gen());
            }
            entries.push((10_000 + self.rng.gen_range(0..100), value));
        }
        put_uvarint(out, entries.len() as u32);
        for (tag, value) in entries {
            put_uvarint(out, tag);
            put_uvarint(out, value.len() as u32);
            out.put_slice(&value);
        }
    }
}

fn all_keys() -> impl Iterator<Item = ApiKey> {
    ApiKey::iter()
}

#[test]
fn every_api_key_has_a_root_with_its_versions() {
    for key in all_keys() {
        let root = root_for(key as i16).unwrap_or_else(|| panic!("no schema for {key:?}"));
        let s = &structs()[root];
        let valid = key.valid_versions();
        // valid_versions() is the response's range, which keeps versions the
        // request schema marks unstable; the request range may end earlier.
        assert!(
            valid.min == s.lo && s.hi <= valid.max,
            "{key:?} ({})",
            s.name
        );
    }
}

#[test]
fn schema_tables_match_locked_kafka_protocol() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"kafka-protocol\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"'))
        .expect("kafka-protocol in Cargo.lock");
    assert_eq!(
        locked,
        super::tables_kafka_protocol_version(),
        "regenerate protocol/src/schema/tables.rs with protocol/schema-gen/gen_schema.py"
    );
}

fn min_size(ty: &Ty, version: i16) -> usize {
    if let Some(w) = ty.fixed_width() {
        return w;
    }
    match *ty {
        Ty::Str { compact: true, .. }
        | Ty::Bytes { compact: true, .. }
        | Ty::Array { compact: true, .. } => 1,
        Ty::Str { .. } => 2,
        Ty::Bytes { .. } | Ty::Array { .. } => 4,
        Ty::OptStruct(_) => 1,
        Ty::Struct(idx) => {
            let s = &structs()[idx];
            let fields: usize = s
                .fields
                .iter()
                .filter(|f| f.lo <= version && version <= f.hi)
                .map(|f| min_size(&f.ty, version))
                .sum();
            fields + usize::from(s.has_tagged_section(version))
        }
        _ => 0,
    }
}

/// The walk bounds counts by remaining bytes, which is only sound if every
/// array element occupies at least one byte.
#[test]
fn every_array_element_occupies_at_least_one_byte() {
    fn check(ty: &Ty, version: i16, owner: &str) {
        if let Ty::Array { elem, .. } = ty {
            assert!(
                min_size(elem, version) >= 1,
                "{owner} v{version}: zero-size array element"
            );
            check(elem, version, owner);
        }
    }
    for s in structs() {
        for v in s.lo..=s.hi {
            for f in s.fields.iter().filter(|f| f.lo <= v && v <= f.hi) {
                check(&f.ty, v, s.name);
            }
            for t in s.tags.iter().filter(|t| t.lo <= v && v <= t.hi) {
                check(&t.ty, v, s.name);
            }
        }
    }
}

#[test]
fn generated_bodies_decode_exactly_in_kafka_protocol() {
    let mut generator = Gen {
        rng: StdRng::seed_from_u64(0x6a6f_7264),
    };
    let mut cases = 0usize;
    for key in all_keys() {
        let root = root_for(key as i16).unwrap();
        let (lo, hi) = (structs()[root].lo, structs()[root].hi);
        for version in lo..=hi {
            for _ in 0..40 {
                let mut out = BytesMut::new();
                generator.structure(&structs()[root], version, &mut out, 0);
                let body = out.freeze();
                let walked = validate(key as i16, version, &body).unwrap_or_else(|e| {
                    panic!("{key:?} v{version}: walk rejected a generated body: {e}")
                });
                assert_eq!(walked, body.len(), "{key:?} v{version}");
                let mut buf = body.clone();
                let decoded = RequestKind::decode(key, &mut buf, version).unwrap_or_else(|e| {
                    panic!("{key:?} v{version}: kafka-protocol rejected {body:?}: {e:#}")
                });
                assert!(
                    buf.is_empty(),
                    "{key:?} v{version}: {} bytes left by kafka-protocol",
                    buf.len()
                );

                let mut again = BytesMut::new();
                decoded.encode(&mut again, version).unwrap();
                let again: Bytes = again.freeze();
                let walked = validate(key as i16, version, &again).unwrap_or_else(|e| {
                    panic!("{key:?} v{version}: walk rejected kafka-protocol's encoding: {e}")
                });
                assert_eq!(walked, again.len(), "{key:?} v{version}");
                let mut buf = again.clone();
                let redecoded = RequestKind::decode(key, &mut buf, version).unwrap();
                assert_eq!(redecoded, decoded, "{key:?} v{version}");
                cases += 1;
            }
        }
    }
    assert!(cases > 5_000, "only {cases} cases");
}

/// Any strict prefix of a valid body must fail the walk (no count can be
/// satisfied by bytes that are not there), and so must any extra byte.
#[test]
fn truncated_or_extended_bodies_are_rejected() {
    let mut generator = Gen {
        rng: StdRng::seed_from_u64(7),
    };
    for key in all_keys() {
        let root = root_for(key as i16).unwrap();
        let (lo, hi) = (structs()[root].lo, structs()[root].hi);
        for version in lo..=hi {
            let mut out = BytesMut::new();
            generator.structure(&structs()[root], version, &mut out, 0);
            let body = out.freeze();
            for cut in 0..body.len() {
                assert!(
                    validate(key as i16, version, &body[..cut]).is_err(),
                    "{key:?} v{version}: prefix of {cut}/{} bytes accepted",
                    body.len()
                );
            }
            let mut longer = body.to_vec();
            longer.push(0);
            assert_eq!(
                validate(key as i16, version, &longer).ok(),
                Some(body.len()),
                "{key:?} v{version}: the walk must stop where the body ends"
            );
        }
    }
}
