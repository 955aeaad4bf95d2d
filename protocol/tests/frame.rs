//! Framing: clean close, truncation, hostile length prefixes, writers.

mod common;

use std::time::Duration;

use fjord_protocol::{FrameError, read_frame, write_frame, write_frame_parts};
use tokio::io::AsyncWriteExt;

const MAX: usize = 1024;

async fn read_all(input: &[u8], max: usize) -> Vec<Result<Option<Vec<u8>>, String>> {
    let mut r = input;
    let mut out = Vec::new();
    for _ in 0..10 {
        match read_frame(&mut r, max).await {
            Ok(Some(b)) => out.push(Ok(Some(b.to_vec()))),
            Ok(None) => {
                out.push(Ok(None));
                break;
            }
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

#[tokio::test]
async fn eof_before_first_byte_is_a_clean_close() {
    let mut r: &[u8] = &[];
    assert!(read_frame(&mut r, MAX).await.unwrap().is_none());
}

#[tokio::test]
async fn back_to_back_frames_then_clean_close() {
    let mut input = common::framed(b"hello");
    input.extend(common::framed(b""));
    input.extend(common::framed(b"world!"));
    let got = read_all(&input, MAX).await;
    assert_eq!(
        got,
        vec![
            Ok(Some(b"hello".to_vec())),
            Ok(Some(Vec::new())),
            Ok(Some(b"world!".to_vec())),
            Ok(None)
        ]
    );
}

#[tokio::test]
async fn eof_inside_the_length_prefix_is_truncation() {
    let mut r: &[u8] = &[0, 0];
    match read_frame(&mut r, MAX).await {
        Err(FrameError::Truncated {
            expected: 4,
            got: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn eof_inside_the_payload_is_truncation() {
    let mut input = common::framed(b"0123456789");
    input.truncate(4 + 6);
    let mut r: &[u8] = &input;
    match read_frame(&mut r, MAX).await {
        Err(FrameError::Truncated {
            expected: 10,
            got: 6,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn negative_length_is_rejected() {
    for len in [-1i32, i32::MIN] {
        let bytes = len.to_be_bytes();
        let mut r: &[u8] = &bytes;
        match read_frame(&mut r, MAX).await {
            Err(FrameError::NegativeLength(n)) => assert_eq!(n, len),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn oversized_length_is_rejected_before_reading_the_payload() {
    // Claims i32::MAX bytes and sends none: must fail at once on the limit,
    // not wait for (or allocate) the payload.
    let bytes = i32::MAX.to_be_bytes();
    let mut r: &[u8] = &bytes;
    match read_frame(&mut r, fjord_protocol::DEFAULT_MAX_REQUEST_BYTES).await {
        Err(FrameError::TooLarge { size, max }) => {
            assert_eq!(size, i32::MAX as usize);
            assert_eq!(max, 104_857_600);
        }
        other => panic!("{other:?}"),
    }
    // One byte over a small limit too.
    let input = common::framed(&[0u8; MAX + 1]);
    let mut r: &[u8] = &input;
    assert!(matches!(
        read_frame(&mut r, MAX).await,
        Err(FrameError::TooLarge { .. })
    ));
    // Exactly at the limit is fine.
    let input = common::framed(&[7u8; MAX]);
    let mut r: &[u8] = &input;
    assert_eq!(read_frame(&mut r, MAX).await.unwrap().unwrap().len(), MAX);
}

#[tokio::test]
async fn frames_arriving_in_small_pieces_are_reassembled() {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let input = common::framed(&payload);
    let (mut tx, mut rx) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        for chunk in input.chunks(777) {
            tx.write_all(chunk).await.unwrap();
        }
    });
    let got = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rx, 1 << 20))
        .await
        .expect("read_frame timed out")
        .unwrap()
        .unwrap();
    assert_eq!(got.as_ref(), payload.as_slice());
    writer.await.unwrap();
}

#[tokio::test]
async fn writers_produce_readable_frames() {
    let mut out = Vec::new();
    write_frame(&mut out, &common::framed(b"abc"))
        .await
        .unwrap();
    write_frame_parts(&mut out, &[b"he", b"", b"llo"])
        .await
        .unwrap();
    write_frame_parts(&mut out, &[]).await.unwrap();
    let got = read_all(&out, MAX).await;
    assert_eq!(
        got,
        vec![
            Ok(Some(b"abc".to_vec())),
            Ok(Some(b"hello".to_vec())),
            Ok(Some(Vec::new())),
            Ok(None)
        ]
    );
}

#[tokio::test]
async fn vectored_writes_survive_short_writes() {
    // A duplex with a tiny buffer forces partial vectored writes.
    let (mut tx, mut rx) = tokio::io::duplex(3);
    let big = vec![9u8; 10_000];
    let writer = tokio::spawn(async move {
        write_frame_parts(&mut tx, &[b"head", &big]).await.unwrap();
    });
    let got = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rx, 1 << 20))
        .await
        .expect("timed out")
        .unwrap()
        .unwrap();
    assert_eq!(&got[..4], b"head");
    assert_eq!(got.len(), 10_004);
    writer.await.unwrap();
}
