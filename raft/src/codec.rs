//! Byte-level helpers for the metadata record encoding: unsigned varints, zigzag varints,
//! length-prefixed strings and byte arrays. Every read is bounded by the input it is given, so
//! a corrupt length can never make the decoder allocate more than the input holds.

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

use crate::error::DecodeError;

pub(crate) fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub(crate) fn put_varint(buf: &mut BytesMut, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_str(buf: &mut BytesMut, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.put_slice(s.as_bytes());
}

/// `None` is encoded as length 0, `Some(s)` as `len(s) + 1`, as Kafka's compact nullable strings.
pub(crate) fn put_opt_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(buf, 0),
        Some(s) => {
            put_uvarint(buf, s.len() as u64 + 1);
            buf.put_slice(s.as_bytes());
        }
    }
}

pub(crate) fn put_uuid(buf: &mut BytesMut, id: &Uuid) {
    buf.put_slice(id.as_bytes());
}

pub(crate) fn put_i32s(buf: &mut BytesMut, v: &[i32]) {
    put_uvarint(buf, v.len() as u64);
    for x in v {
        put_varint(buf, i64::from(*x));
    }
}

pub(crate) fn put_bool(buf: &mut BytesMut, b: bool) {
    buf.put_u8(u8::from(b));
}

/// A cursor over an encoded record body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::Malformed("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint too long"))
    }

    pub(crate) fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        i32::try_from(self.varint()?).map_err(|_| DecodeError::Malformed("int32 out of range"))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, DecodeError> {
        i16::try_from(self.varint()?).map_err(|_| DecodeError::Malformed("int16 out of range"))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("boolean is neither 0 nor 1")),
        }
    }

    /// A length that must fit in what is left, so callers can allocate it safely.
    pub(crate) fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.uvarint()?;
        if n > self.buf.len() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed("string is not UTF-8"))
    }

    pub(crate) fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let n = usize::try_from(n - 1).map_err(|_| DecodeError::Truncated)?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| DecodeError::Malformed("string is not UTF-8"))
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        let b = self.bytes(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Uuid::from_bytes(a))
    }

    pub(crate) fn i32s(&mut self) -> Result<Vec<i32>, DecodeError> {
        // Each element takes at least one byte, so `len` bounds the allocation.
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.i32()?);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(Reader::new(&b).varint().unwrap(), v);
        }
        let mut r = Reader::new(&[0xff; 11]);
        assert!(r.uvarint().is_err());
    }

    #[test]
    fn lengths_past_the_input_are_rejected_before_allocating() {
        let mut b = BytesMut::new();
        put_uvarint(&mut b, u64::from(u32::MAX));
        assert!(matches!(
            Reader::new(&b).i32s(),
            Err(DecodeError::Truncated)
        ));
        assert!(Reader::new(&b).string().is_err());
    }
}
