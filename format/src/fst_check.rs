//! A structural check of an FST (the `fst` crate's format, version 3), without trusting it.
//!
//! `fst` 0.4.7 trusts its bytes: `Fst::new` checks the length, the version and (by a wrong `&&`)
//! almost nothing of the root address, and node decoding then indexes and subtracts unchecked, so
//! a malformed index panics (slice index out of range, subtraction overflow in `unpack_delta`,
//! `assert!` on pack sizes in `unpack_uint`, output overflow in `Output::cat`) or loops (a
//! transition back to its own node). The snapshot's section checksum only stops accidents.
//!
//! This decodes every node once, with checked arithmetic, and accepts only FSTs that `fst` can
//! read without panicking and whose walks end: the nodes lie back to back between the 16-byte
//! header and the root (the writer's layout), pack sizes are at most 8, every transition points
//! to a node strictly below its own (so the graph is acyclic) and the outputs cannot overflow
//! when added along a path. It costs two linear passes over the index and one bit of memory per
//! index byte; `Snapshot::open` runs it before handing the index to `fst`.

const HEADER: usize = 16;
/// Root address, key count, checksum.
const TRAILER: usize = 20;
const VERSION: u64 = 3;
const TRANS_INDEX_THRESHOLD: usize = 32;

/// A decoded node: where its transitions go and what they and its final state output.
struct Node {
    /// Lowest address of the node's bytes.
    end: usize,
    final_output: u64,
    /// `(target address, output)` of each transition.
    trans: Vec<(usize, u64)>,
}

fn uint(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(n)?)?;
    Some(
        bytes
            .iter()
            .enumerate()
            .fold(0, |v, (i, &x)| v | u64::from(x) << (8 * i)),
    )
}

/// The node at `addr`, decoded with every read and subtraction checked.
fn node(b: &[u8], addr: usize) -> Option<Node> {
    let state = *b.get(addr)?;
    let sub = |a: usize, n: usize| a.checked_sub(n);
    let target = |end: usize, delta: u64| -> Option<usize> {
        let delta = usize::try_from(delta).ok()?;
        if delta == 0 {
            Some(0)
        } else {
            end.checked_sub(delta)
        }
    };
    let common = |s: u8| usize::from(s & 0b11_1111 == 0);
    let node = match state >> 6 {
        // One transition to the node just below, no output.
        0b11 => {
            let end = sub(addr, common(state))?;
            Node {
                end,
                final_output: 0,
                trans: vec![(sub(end, 1)?, 0)],
            }
        }
        // One transition with a packed address and output.
        0b10 => {
            let sizes = *b.get(sub(addr, common(state) + 1)?)?;
            let (tsize, osize) = (usize::from(sizes >> 4), usize::from(sizes & 0xf));
            if !(1..=8).contains(&tsize) || osize > 8 {
                return None;
            }
            let end = sub(addr, common(state) + 1 + tsize + osize)?;
            let out = if osize == 0 { 0 } else { uint(b, end, osize)? };
            let delta = uint(b, end + osize, tsize)?;
            Node {
                end,
                final_output: 0,
                trans: vec![(target(end, delta)?, out)],
            }
        }
        // Any number of transitions, maybe final.
        _ => {
            let is_final = state & 0b0100_0000 != 0;
            let (ntrans, ntrans_len) = match state & 0b11_1111 {
                0 => match *b.get(sub(addr, 1)?)? {
                    1 => (256, 1),
                    n => (usize::from(n), 1),
                },
                n => (usize::from(n), 0),
            };
            let sizes = *b.get(sub(addr, ntrans_len + 1)?)?;
            let (tsize, osize) = (usize::from(sizes >> 4), usize::from(sizes & 0xf));
            if (ntrans > 0 && !(1..=8).contains(&tsize)) || tsize > 8 || osize > 8 {
                return None;
            }
            let index = if ntrans > TRANS_INDEX_THRESHOLD {
                256
            } else {
                0
            };
            let inputs_end = sub(addr, ntrans_len + 1 + index)?;
            let addrs_end = sub(inputs_end, ntrans)?;
            let outs_end = sub(addrs_end, ntrans * tsize)?;
            let final_osize = if is_final { osize } else { 0 };
            let end = sub(outs_end, ntrans * osize + final_osize)?;
            let final_output = if is_final && osize > 0 {
                uint(b, end, osize)?
            } else {
                0
            };
            let trans = (0..ntrans)
                .map(|i| {
                    let delta = uint(b, addrs_end - (i + 1) * tsize, tsize)?;
                    let out = if osize == 0 {
                        0
                    } else {
                        uint(b, outs_end - (i + 1) * osize, osize)?
                    };
                    Some((target(end, delta)?, out))
                })
                .collect::<Option<Vec<_>>>()?;
            Node {
                end,
                final_output,
                trans,
            }
        }
    };
    (node.end >= HEADER).then_some(node)
}

/// Whether `fst` can walk these bytes without panicking or looping (see the module docs).
pub(crate) fn fst_is_sound(b: &[u8]) -> bool {
    check(b).is_some()
}

fn check(b: &[u8]) -> Option<()> {
    if b.len() < HEADER + TRAILER || uint(b, 0, 8)? != VERSION {
        return None;
    }
    let root = usize::try_from(uint(b, b.len() - 12, 8)?).ok()?;
    // The root is the last node written (its last byte just before the trailer), or the empty
    // final node of an FST holding only the empty key.
    if root == 0 {
        return (b.len() == HEADER + TRAILER).then_some(());
    }
    if root.checked_add(TRAILER + 1)? != b.len() {
        return None;
    }
    // The writer puts nodes back to back between the header and the root: scan them from the
    // root down, marking where each one's last byte (its address) is. Every output is summed:
    // a path meets each transition at most once, so no sum along a path exceeds the total.
    let mut is_node = vec![0u64; b.len().div_ceil(64)];
    let mut total = 0u64;
    let mut addr = root;
    loop {
        let n = node(b, addr)?;
        is_node[addr / 64] |= 1 << (addr % 64);
        total = total.checked_add(n.final_output)?;
        for &(_, out) in &n.trans {
            total = total.checked_add(out)?;
        }
        if n.end == HEADER {
            break;
        }
        addr = n.end - 1;
    }
    // Every transition goes to one of those nodes (or to the empty final node, address 0), and
    // strictly below its own node (`node` computes `end - delta`), so walks end.
    let mut addr = root;
    loop {
        let n = node(b, addr)?;
        if !n
            .trans
            .iter()
            .all(|&(t, _)| t == 0 || is_node[t / 64] & (1 << (t % 64)) != 0)
        {
            return None;
        }
        if n.end == HEADER {
            return Some(());
        }
        addr = n.end - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::fst_is_sound;

    #[test]
    fn accepts_what_fst_writes() {
        let sizes = [0usize, 1, 2, 40, 300, 5000];
        for n in sizes {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("{:x}/{i}", i % 37).into_bytes())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let map = fst::Map::from_iter(
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| (k, (i as u64) * 1_000_003)),
            )
            .unwrap();
            assert!(fst_is_sound(map.as_fst().as_bytes()), "{n} keys");
        }
        let wide = fst::Map::from_iter((0..=255u8).map(|b| ([b, b], u64::from(b)))).unwrap();
        assert!(fst_is_sound(wide.as_fst().as_bytes()));
    }

    #[test]
    fn rejects_a_transition_that_wraps_around_to_its_own_node() {
        let mut b = 3u64.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&16u64.wrapping_sub(26).to_le_bytes());
        b.extend_from_slice(&[0x80, b'a', 0b1000_0000]);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&26u64.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        assert!(!fst_is_sound(&b));
    }

    #[test]
    fn rejects_truncations_and_byte_changes_it_cannot_vouch_for() {
        let map = fst::Map::from_iter((0..500u64).map(|i| (format!("k{i:05}"), i))).unwrap();
        let good = map.as_fst().as_bytes().to_vec();
        for n in 0..good.len() {
            assert!(!fst_is_sound(&good[..n]) || n == good.len());
        }
        // Whatever it accepts, fst walks without panicking.
        for at in 16..good.len() - 20 {
            for bit in 0..8 {
                let mut b = good.clone();
                b[at] ^= 1 << bit;
                if fst_is_sound(&b) {
                    let m = fst::Map::new(b).unwrap();
                    let mut s = fst::IntoStreamer::into_stream(&m);
                    while fst::Streamer::next(&mut s).is_some() {}
                }
            }
        }
    }
}
