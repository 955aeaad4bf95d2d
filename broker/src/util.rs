//! Small helpers: Kafka's base64 form of UUIDs, and string conversions for kafka-protocol types.

use fjord_protocol::kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding: how Kafka prints topic and cluster ids.
pub fn uuid_to_base64(id: &Uuid) -> String {
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    out
}

pub fn uuid_from_base64(s: &str) -> Option<Uuid> {
    if s.len() != 22 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut n = 0;
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if n < 16 {
                out[n] = (acc >> bits) as u8;
                n += 1;
            }
        }
    }
    (n == 16).then(|| Uuid::from_bytes(out))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Topics Kafka treats as internal (`Topic.isInternal`): clients neither produce to them nor
/// delete their records, and Metadata flags them.
pub fn is_internal_topic(topic: &str) -> bool {
    matches!(
        topic,
        "__consumer_offsets" | "__transaction_state" | "__share_group_state"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_kafka() {
        for _ in 0..100 {
            let id = Uuid::new_v4();
            let text = uuid_to_base64(&id);
            assert_eq!(text.len(), 22);
            assert_eq!(uuid_from_base64(&text), Some(id));
        }
        // Kafka prints the nil UUID as AAAAAAAAAAAAAAAAAAAAAA.
        assert_eq!(uuid_to_base64(&Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(uuid_from_base64("not base64"), None);
    }
}
