//! Hostile change chunks for tests (the `test-support` feature): small in bytes, costly to decode
//! unless bounded the way [`inspect`](super::inspect) bounds them. One definition for the protocol's
//! own tests, the relay's conformance suite and the end-to-end hostile suite.
use super::{write_uleb, MAGIC, TYPE_CHANGE, TYPE_COMPRESSED};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// A chunk of the Automerge binary format: magic, the first 4 bytes of SHA-256 over `type length data`
/// of the uncompressed change (`checksum_of`), then `chunk_type`, the length and `body`.
pub fn chunk(checksum_of: &[u8], chunk_type: u8, body: &[u8]) -> Vec<u8> {
    let mut head = vec![TYPE_CHANGE];
    write_uleb(&mut head, checksum_of.len() as u64);
    let hash = Sha256::new()
        .chain_update(&head)
        .chain_update(checksum_of)
        .finalize();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&hash[..4]);
    out.push(chunk_type);
    write_uleb(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// An inflate bomb: a compressed change chunk of ~65 KB holding 64 MiB of zeros. Made once per
/// process (deflating 64 MiB takes seconds in a debug build).
pub fn deflate_bomb() -> Vec<u8> {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let zeros = vec![0u8; 64 << 20];
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, &zeros).expect("deflating into memory");
        chunk(
            &zeros,
            TYPE_COMPRESSED,
            &enc.finish().expect("deflating into memory"),
        )
    })
    .clone()
}

/// An operation-count bomb: a change of a few dozen bytes whose action column is one run-length
/// encoded run of a billion operations.
pub fn billion_op_change() -> Vec<u8> {
    let mut data = vec![0u8]; // no dependencies
    data.push(16);
    data.extend_from_slice(&[7u8; 16]); // actor
    data.extend_from_slice(&[1, 1, 0, 0, 0]); // seq 1, start op 1, time 0, no message, no actors

    // The run length, signed LEB128 1,000,000,000, then the repeated value 1 (unsigned LEB128).
    let mut column = Vec::new();
    let mut n: i64 = 1_000_000_000;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0) {
            column.push(byte);
            break;
        }
        column.push(byte | 0x80);
    }
    column.push(1);
    data.push(1); // one column
    write_uleb(&mut data, (4 << 4) | 2); // the action column, integer RLE
    write_uleb(&mut data, column.len() as u64);
    data.extend_from_slice(&column);
    chunk(&data, TYPE_CHANGE, &data)
}
