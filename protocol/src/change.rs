//! Bounded inspection of raw change bytes, before Automerge parses them.
//!
//! Automerge's parser trusts its input in three ways a relay cannot afford: it inflates a compressed
//! chunk without a cap, it never compares the checksum in the header with the content, and it counts
//! operations by decoding every one of them (a few bytes of run-length encoding can stand for millions).
//! [`inspect`] checks the chunk header, inflates with a cap, verifies the checksum and counts the rows of
//! every operation column by summing run lengths: work proportional to the bytes, never to the
//! operations they stand for. Only a change that passes is handed to Automerge.
//!
//! Format (automerge.org binary format): `magic(4) checksum(4) type(1) length(uLEB) data`, where the
//! checksum is the first 4 bytes of SHA-256 over `type length data` of the *uncompressed* change (which
//! is also the change hash). Type 1 is a change, type 2 a deflate-compressed change.
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::io::Read;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const TYPE_DOCUMENT: u8 = 0;
const TYPE_CHANGE: u8 = 1;
const TYPE_COMPRESSED: u8 = 2;

/// What is wrong with a change's bytes. The message names the defect, never the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// Not a readable change chunk (with the rule it breaks).
    Malformed(&'static str),
    /// The header's checksum does not match the content.
    BadChecksum,
    /// Larger than the limit once inflated.
    TooLarge { limit: usize },
    /// Encodes more operations than the limit.
    TooManyOps { limit: u64 },
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Defect::Malformed(why) => write!(f, "not a readable change: {why}"),
            Defect::BadChecksum => f.write_str("the change's checksum does not match its content"),
            Defect::TooLarge { limit } => write!(f, "the change is larger than {limit} bytes"),
            Defect::TooManyOps { limit } => {
                write!(f, "the change holds more than {limit} operations")
            }
        }
    }
}

/// A change that passed inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected<'a> {
    /// The change as an uncompressed chunk, ready for `automerge::Change::try_from`.
    pub chunk: Cow<'a, [u8]>,
    /// The change hash (SHA-256 of the uncompressed chunk's type, length and data).
    pub hash: [u8; 32],
    /// An upper bound of the operations in the change: the most rows any column decodes to.
    pub ops: u64,
}

/// Checks a change's header, size, checksum and operation count. `max_bytes` bounds the inflated
/// size, `max_ops` the operations.
pub fn inspect(bytes: &[u8], max_bytes: usize, max_ops: u64) -> Result<Inspected<'_>, Defect> {
    let mut r = Reader::new(bytes);
    if r.take(4)
        .map_err(|_| Defect::Malformed("truncated header"))?
        != MAGIC
    {
        return Err(Defect::Malformed("not an Automerge chunk"));
    }
    let checksum: [u8; 4] = r
        .take(4)
        .map_err(|_| Defect::Malformed("truncated header"))?
        .try_into()
        .expect("4 bytes");
    let chunk_type = r
        .byte()
        .map_err(|_| Defect::Malformed("truncated header"))?;
    let len = r
        .uleb()
        .map_err(|_| Defect::Malformed("bad chunk length"))?;
    let data = r.rest();
    if len != data.len() as u64 {
        return Err(Defect::Malformed(if len > data.len() as u64 {
            "truncated chunk"
        } else {
            "bytes after the chunk"
        }));
    }
    let (chunk, data): (Cow<'_, [u8]>, Cow<'_, [u8]>) = match chunk_type {
        TYPE_CHANGE => {
            if data.len() > max_bytes {
                return Err(Defect::TooLarge { limit: max_bytes });
            }
            (Cow::Borrowed(bytes), Cow::Borrowed(data))
        }
        TYPE_COMPRESSED => {
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .take(max_bytes as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|_| Defect::Malformed("compressed data does not inflate"))?;
            if inflated.len() > max_bytes {
                return Err(Defect::TooLarge { limit: max_bytes });
            }
            let mut chunk = Vec::with_capacity(inflated.len() + 20);
            chunk.extend_from_slice(&MAGIC);
            chunk.extend_from_slice(&checksum);
            chunk.push(TYPE_CHANGE);
            write_uleb(&mut chunk, inflated.len() as u64);
            chunk.extend_from_slice(&inflated);
            (Cow::Owned(chunk), Cow::Owned(inflated))
        }
        TYPE_DOCUMENT => return Err(Defect::Malformed("a whole document, not a change")),
        _ => return Err(Defect::Malformed("not a change chunk")),
    };
    let mut hasher = Sha256::new();
    let mut head = vec![TYPE_CHANGE];
    write_uleb(&mut head, data.len() as u64);
    hasher.update(&head);
    hasher.update(&data);
    let hash: [u8; 32] = hasher.finalize().into();
    if hash[..4] != checksum {
        return Err(Defect::BadChecksum);
    }
    let ops = count_ops(&data, max_ops)?;
    Ok(Inspected { chunk, hash, ops })
}

/// Walks the change header to its columns and returns the most rows any column decodes to.
fn count_ops(data: &[u8], max_ops: u64) -> Result<u64, Defect> {
    let bad = |why: &'static str| move |_: Short| Defect::Malformed(why);
    let mut r = Reader::new(data);
    let deps = r.uleb().map_err(bad("dependencies"))?;
    r.skip_n(deps, 32).map_err(bad("dependencies"))?;
    let actor_len = r.uleb().map_err(bad("actor"))?;
    r.skip_n(actor_len, 1).map_err(bad("actor"))?;
    r.uleb().map_err(bad("seq"))?;
    let start_op = r.uleb().map_err(bad("start op"))?;
    if start_op == 0 || start_op > u32::MAX as u64 {
        return Err(Defect::Malformed("start op out of range"));
    }
    r.sleb().map_err(bad("time"))?;
    let message_len = r.uleb().map_err(bad("message"))?;
    r.skip_n(message_len, 1).map_err(bad("message"))?;
    let others = r.uleb().map_err(bad("actors"))?;
    for _ in 0..others {
        let n = r.uleb().map_err(bad("actors"))?;
        r.skip_n(n, 1).map_err(bad("actors"))?;
    }
    let ncols = r.uleb().map_err(bad("columns"))?;
    if ncols > 64 {
        return Err(Defect::Malformed("too many columns"));
    }
    let mut specs = Vec::with_capacity(ncols as usize);
    for _ in 0..ncols {
        let spec = r.uleb().map_err(bad("columns"))?;
        let len = r.uleb().map_err(bad("columns"))?;
        specs.push((spec, len));
    }
    let mut most = 0u64;
    for (spec, len) in specs {
        let column = r
            .take(usize::try_from(len).map_err(|_| Defect::Malformed("column length"))?)
            .map_err(bad("column data"))?;
        if spec & 0b1000 != 0 {
            return Err(Defect::Malformed("compressed columns"));
        }
        let rows = column_rows(spec & 0b111, column, max_ops)?;
        most = most.max(rows);
        if most > max_ops {
            return Err(Defect::TooManyOps { limit: max_ops });
        }
    }
    Ok(most)
}

/// Rows a column decodes to, counted from its run lengths. Stops early past `max`.
fn column_rows(column_type: u64, bytes: &[u8], max: u64) -> Result<u64, Defect> {
    const GROUP: u64 = 0;
    const ACTOR: u64 = 1;
    const INTEGER: u64 = 2;
    const DELTA: u64 = 3;
    const BOOLEAN: u64 = 4;
    const STRING: u64 = 5;
    const VALUE_META: u64 = 6;
    let bad = |_: Short| Defect::Malformed("column encoding");
    let mut r = Reader::new(bytes);
    let mut rows: u64 = 0;
    let read_value = |r: &mut Reader<'_>| -> Result<(), Short> {
        match column_type {
            DELTA => r.sleb().map(drop),
            STRING => {
                let n = r.uleb()?;
                r.skip_n(n, 1)
            }
            _ => r.uleb().map(drop),
        }
    };
    match column_type {
        // Raw value bytes: their rows are counted by the value-metadata column.
        7 => return Ok(0),
        BOOLEAN => {
            while !r.is_empty() {
                rows = rows.saturating_add(r.uleb().map_err(bad)?);
                if rows > max {
                    return Err(Defect::TooManyOps { limit: max });
                }
            }
        }
        GROUP | ACTOR | INTEGER | DELTA | STRING | VALUE_META => {
            while !r.is_empty() {
                let count = r.sleb().map_err(bad)?;
                let n = count.unsigned_abs();
                if count > 0 {
                    read_value(&mut r).map_err(bad)?;
                } else if count < 0 {
                    // A literal run: its values are really there, so reading them is bounded by the bytes.
                    for _ in 0..n {
                        read_value(&mut r).map_err(bad)?;
                    }
                } else {
                    rows = rows.saturating_add(r.uleb().map_err(bad)?);
                }
                rows = rows.saturating_add(n);
                if rows > max {
                    return Err(Defect::TooManyOps { limit: max });
                }
            }
        }
        _ => return Err(Defect::Malformed("unknown column type")),
    }
    Ok(rows)
}

fn write_uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The input ended early or a number did not fit.
#[derive(Debug)]
struct Short;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        self.pos = self.bytes.len();
        rest
    }
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.bytes.get(self.pos).ok_or(Short)?;
        self.pos += 1;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let out = self.bytes.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(out)
    }
    /// Skips `count` items of `size` bytes, checking the total fits in what is left.
    fn skip_n(&mut self, count: u64, size: u64) -> Result<(), Short> {
        let n = count.checked_mul(size).ok_or(Short)?;
        self.take(usize::try_from(n).map_err(|_| Short)?).map(drop)
    }
    fn uleb(&mut self) -> Result<u64, Short> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(Short);
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Short)
    }
    fn sleb(&mut self) -> Result<i64, Short> {
        let mut v: i64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift >= 64 {
                return Err(Short);
            }
            v |= i64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Ok(v);
            }
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod bombs;

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ObjType, ROOT};

    fn change_with_list(n: usize) -> Vec<u8> {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let list = tx.put_object(ROOT, "l", ObjType::List).unwrap();
        for i in 0..n {
            tx.insert(&list, i, "x").unwrap();
        }
        tx.put(ROOT, "name", "王芳").unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().raw_bytes().to_vec()
    }

    #[test]
    fn honest_changes_pass_with_their_op_count_and_hash() {
        let bytes = change_with_list(10);
        let got = inspect(&bytes, 1 << 20, 1000).unwrap();
        let change = automerge::Change::try_from(&got.chunk[..]).unwrap();
        assert_eq!(got.hash, change.hash().0);
        // 1 list + 10 inserts + 1 put: the inspected bound is at least the real count.
        assert!(
            got.ops >= change.len() as u64,
            "{} < {}",
            got.ops,
            change.len()
        );
        assert_eq!(change.len(), 12);
        assert!(got.ops <= 12, "{}", got.ops);
    }

    #[test]
    fn compressed_changes_are_inflated_with_a_cap() {
        // Automerge compresses changes above 256 bytes in saved documents, not single changes; build a
        // compressed chunk by hand the way the format defines it.
        let plain = change_with_list(2000);
        let mut r = Reader::new(&plain);
        r.take(9).unwrap();
        r.uleb().unwrap();
        let data = r.rest();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, data).unwrap();
        let deflated = enc.finish().unwrap();
        let mut chunk = plain[..8].to_vec();
        chunk.push(TYPE_COMPRESSED);
        write_uleb(&mut chunk, deflated.len() as u64);
        chunk.extend_from_slice(&deflated);
        let got = inspect(&chunk, 1 << 20, 10_000).unwrap();
        assert_eq!(&got.chunk[..], &plain[..]);
        assert!(matches!(
            inspect(&chunk, data.len() - 1, 10_000),
            Err(Defect::TooLarge { .. })
        ));
    }

    #[test]
    fn a_deflate_bomb_is_refused_without_inflating_it() {
        let chunk = bombs::deflate_bomb();
        assert!(chunk.len() < 100_000);
        assert_eq!(
            inspect(&chunk, 1 << 20, 1000),
            Err(Defect::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn checksums_are_verified() {
        let mut bytes = change_with_list(3);
        bytes[5] ^= 0xff;
        assert_eq!(inspect(&bytes, 1 << 20, 1000), Err(Defect::BadChecksum));
        let mut bytes = change_with_list(3);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(inspect(&bytes, 1 << 20, 1000).is_err());
    }

    #[test]
    fn run_length_encoded_ops_are_counted_from_the_runs() {
        // 5,000 nulls inserted into a list: every column is one run, so the change stays tiny.
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let list = tx.put_object(ROOT, "l", ObjType::List).unwrap();
        for i in 0..5_000 {
            tx.insert(&list, i, automerge::ScalarValue::Null).unwrap();
        }
        tx.commit();
        let bytes = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
        assert!(bytes.len() < 500, "{}", bytes.len());
        assert_eq!(
            inspect(&bytes, 1 << 20, 1_000),
            Err(Defect::TooManyOps { limit: 1_000 })
        );
        let ok = inspect(&bytes, 1 << 20, 10_000).unwrap();
        assert_eq!(ok.ops, 5_001);
    }

    #[test]
    fn a_billion_operations_in_a_few_bytes_are_refused_at_once() {
        let bomb = bombs::billion_op_change();
        assert!(bomb.len() < 64, "{}", bomb.len());
        // Counting runs is proportional to the bytes; decoding the operations would not end here.
        assert_eq!(
            inspect(&bomb, 1 << 20, 100_000),
            Err(Defect::TooManyOps { limit: 100_000 })
        );
    }

    #[test]
    fn truncated_and_foreign_bytes_are_malformed() {
        let bytes = change_with_list(3);
        for cut in [0, 3, 8, 9, 12, bytes.len() - 1] {
            assert!(
                matches!(
                    inspect(&bytes[..cut], 1 << 20, 1000),
                    Err(Defect::Malformed(_))
                ),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            inspect(&longer, 1 << 20, 1000),
            Err(Defect::Malformed(_))
        ));
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "a", 1).map(drop))
            .unwrap();
        assert_eq!(
            inspect(&doc.save(), 1 << 20, 1000),
            Err(Defect::Malformed("a whole document, not a change"))
        );
        assert!(inspect(b"{\"json\": true}", 1 << 20, 1000).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = inspect(&bytes, 1 << 16, 1000);
        }

        #[test]
        fn never_panics_on_mutated_changes(pos in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = change_with_list(5);
            let i = pos % bytes.len();
            bytes[i] = byte;
            let _ = inspect(&bytes, 1 << 16, 1000);
        }
    }
}
