//! Unsigned LEB128 varints: 7 bits per byte, least significant group first, the high bit set on
//! every byte but the last.
//!
//! The entry headers of blocks use them (`spec/FORMAT.md`), and so do the builder's temporary
//! sort runs. Writers always write the shortest encoding. Readers bound what they accept by the
//! bit width of the value they expect: an encoding longer than that width needs, or with value
//! bits above it, is rejected with `None` (never a panic, never a silently truncated value).

/// The longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Appends the shortest encoding of `v` to `out`.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The length of the shortest encoding of `v`: what [`put`] appends.
#[inline]
pub fn len(v: u64) -> usize {
    (u64::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize
}

/// Reads a varint of any `u64` at `buf[*pos..]` and moves `pos` past it.
///
/// `None`, with `pos` unchanged, when `buf` ends inside the varint, when it is longer than
/// [`MAX_LEN`] bytes or when its value does not fit in 64 bits.
#[inline]
pub fn get(buf: &[u8], pos: &mut usize) -> Option<u64> {
    get_bits(buf, pos, u64::BITS)
}

/// Reads a varint of a value below `2^bits` (`bits` from 7 to 64) at `buf[*pos..]` and moves
/// `pos` past it.
///
/// `None`, with `pos` unchanged, when `buf` ends inside the varint, when it is longer than
/// `ceil(bits / 7)` bytes, or when its value has a bit set at `bits` or above. Encodings longer
/// than the shortest are accepted within that length, as `spec/FORMAT.md` asks of readers.
#[inline]
pub fn get_bits(buf: &[u8], pos: &mut usize, bits: u32) -> Option<u64> {
    debug_assert!((7..=u64::BITS).contains(&bits));
    // A loop of known length (`bits` is a constant at every call site): the compiler unrolls
    // it, and the common one-byte case costs one comparison.
    let max_len = bits.div_ceil(7) as usize;
    let rest = buf.get(*pos..)?;
    let mut v = 0u64;
    for i in 0..max_len {
        let b = *rest.get(i)?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The last byte allowed holds the top `bits - 7 * (max_len - 1)` bits only.
            let top_bits = bits - 7 * (max_len as u32 - 1);
            if i == max_len - 1 && u64::from(b) >> top_bits != 0 {
                return None;
            }
            *pos += i + 1;
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, v);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encoded(0), [0x00]);
        assert_eq!(encoded(1), [0x01]);
        assert_eq!(encoded(127), [0x7f]);
        assert_eq!(encoded(128), [0x80, 0x01]);
        assert_eq!(encoded(300), [0xac, 0x02]);
        assert_eq!(encoded(16_383), [0xff, 0x7f]);
        assert_eq!(encoded(16_384), [0x80, 0x80, 0x01]);
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(encoded(u64::MAX), max);
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let check = |bytes: &[u8], bits: u32| {
            let mut pos = 0;
            let got = get_bits(bytes, &mut pos, bits);
            if got.is_none() {
                assert_eq!(pos, 0, "pos moved on failure for {bytes:02x?}");
            }
            got
        };
        // Cut short.
        assert_eq!(check(&[], 64), None);
        assert_eq!(check(&[0x80], 64), None);
        assert_eq!(check(&[0xff, 0xff], 64), None);
        // 64 bits: the tenth byte holds one bit; an eleventh byte is too long.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(check(&max, 64), Some(u64::MAX));
        *max.last_mut().unwrap() = 0x02;
        assert_eq!(check(&max, 64), None);
        *max.last_mut().unwrap() = 0x81;
        max.push(0x00);
        assert_eq!(check(&max, 64), None);
        assert_eq!(check(&[0x80; 11], 64), None);
        // 35 bits (block headers): five bytes at most, all of the fifth byte's bits usable.
        assert_eq!(
            check(&[0xff, 0xff, 0xff, 0xff, 0x7f], 35),
            Some((1 << 35) - 1)
        );
        assert_eq!(check(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 35), None);
        // 32 bits: the fifth byte holds four bits.
        assert_eq!(
            check(&[0xff, 0xff, 0xff, 0xff, 0x0f], 32),
            Some(u64::from(u32::MAX))
        );
        assert_eq!(check(&[0xff, 0xff, 0xff, 0xff, 0x1f], 32), None);
        // Longer than the shortest, within the length bound: accepted.
        assert_eq!(check(&[0x80, 0x00], 35), Some(0));
        assert_eq!(check(&[0x81, 0x80, 0x00], 64), Some(1));
    }

    proptest! {
        #[test]
        fn round_trips(values in proptest::collection::vec(any::<u64>(), 0..20), tail in any::<u8>()) {
            let mut buf = Vec::new();
            for &v in &values {
                let before = buf.len();
                put(&mut buf, v);
                prop_assert_eq!(buf.len() - before, len(v));
                prop_assert!(len(v) <= MAX_LEN);
            }
            buf.push(tail);
            let mut pos = 0;
            for &v in &values {
                prop_assert_eq!(get(&buf, &mut pos), Some(v));
            }
            prop_assert_eq!(pos, buf.len() - 1);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16), bits in 7u32..=64) {
            let mut pos = 0;
            if let Some(v) = get_bits(&bytes, &mut pos, bits) {
                prop_assert!(bits == 64 || v < 1 << bits);
                prop_assert!(pos <= bits.div_ceil(7) as usize);
                prop_assert_eq!(get_bits(&bytes[..pos], &mut 0, bits), Some(v));
            } else {
                prop_assert_eq!(pos, 0);
            }
        }
    }
}
