//! Range-sharded versions: which files are shards, in which order, and the split keys between
//! them, from the shards' own key ranges.

use crate::manifest::Sharding;

/// The builder-metadata key (`metadata.builder`) that marks a snapshot as shard `index` of
/// `count`: `{"index": I, "count": N}`.
pub const SHARD_KEY: &str = "shard";

/// A shard's place and key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub index: u32,
    pub count: u32,
    pub first: Option<Vec<u8>>,
    pub last: Option<Vec<u8>>,
}

/// Shard `index` of `count` as recorded in a snapshot's builder metadata, if it is one.
pub(crate) fn recorded_shard(
    builder: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Option<(u32, u32)> {
    let s = builder.get(SHARD_KEY)?;
    let index = u32::try_from(s.get("index")?.as_u64()?).ok()?;
    let count = u32::try_from(s.get("count")?.as_u64()?).ok()?;
    (index < count).then_some((index, count))
}

/// The split keys between shards given in shard order: the first key of the next shard that
/// has keys, or, after the last shard with keys, the key right after its last key. Fails when
/// the shards' key ranges overlap or are out of order.
pub(crate) fn split_keys(shards: &[ShardInfo]) -> Result<Vec<Vec<u8>>, String> {
    // Non-empty shards must follow each other strictly in key order.
    let mut previous: Option<(usize, &[u8])> = None;
    for (i, s) in shards.iter().enumerate() {
        let (Some(first), Some(last)) = (&s.first, &s.last) else {
            continue;
        };
        if let Some((j, prev_last)) = previous {
            if first.as_slice() <= prev_last {
                return Err(format!(
                    "shard {i} starts at {:?}, not after the last key {:?} of shard {j}: the \
                     shards' key ranges overlap or are out of order",
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(prev_last)
                ));
            }
        }
        previous = Some((i, last));
    }
    let mut splits = Vec::with_capacity(shards.len().saturating_sub(1));
    for i in 0..shards.len().saturating_sub(1) {
        let next_first = shards[i + 1..].iter().find_map(|s| s.first.clone());
        let split = match next_first {
            Some(k) => k,
            None => match shards[..=i].iter().rev().find_map(|s| s.last.as_ref()) {
                // The successor of the last key: nothing sorts between the two.
                Some(last) => {
                    let mut k = last.clone();
                    k.push(0);
                    k
                }
                None => Vec::new(),
            },
        };
        splits.push(split);
    }
    Ok(splits)
}

/// The sharding of files that say they are shards (all of them, `0..N` each once), in shard
/// order: the order to list them in, and the manifest's sharding. `None` when no file is a
/// shard; an error when some are and the set is not whole.
pub(crate) fn plan(shards: &[Option<ShardInfo>]) -> Result<Option<(Vec<usize>, Sharding)>, String> {
    if shards.iter().all(Option::is_none) {
        return Ok(None);
    }
    let Some(infos) = shards.iter().cloned().collect::<Option<Vec<ShardInfo>>>() else {
        return Err(
            "some files are shards and some are not: publish the shards of one version \
                    together, and nothing else"
                .into(),
        );
    };
    let count = infos[0].count;
    if let Some(other) = infos.iter().find(|s| s.count != count) {
        return Err(format!(
            "the files are shards of {count} and of {} shards: one version is one set of shards",
            other.count
        ));
    }
    if infos.len() != count as usize {
        return Err(format!(
            "{} files given, {count} shards expected: publish every shard of the version",
            infos.len()
        ));
    }
    let mut order: Vec<usize> = (0..infos.len()).collect();
    order.sort_by_key(|&i| infos[i].index);
    if let Some(w) = order
        .windows(2)
        .find(|w| infos[w[0]].index == infos[w[1]].index)
    {
        return Err(format!("shard {} is given twice", infos[w[0]].index));
    }
    let ordered: Vec<ShardInfo> = order.iter().map(|&i| infos[i].clone()).collect();
    let splits = split_keys(&ordered)?;
    Ok(Some((order, Sharding::range(&splits))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: u32, count: u32, keys: Option<(&str, &str)>) -> ShardInfo {
        ShardInfo {
            index,
            count,
            first: keys.map(|k| k.0.as_bytes().to_vec()),
            last: keys.map(|k| k.1.as_bytes().to_vec()),
        }
    }

    #[test]
    fn split_keys_follow_the_shards() {
        let s = |v: Vec<Vec<u8>>| {
            v.into_iter()
                .map(|k| String::from_utf8(k).unwrap())
                .collect::<Vec<_>>()
        };
        let three = [
            shard(0, 3, Some(("a", "f"))),
            shard(1, 3, Some(("g", "m"))),
            shard(2, 3, Some(("n", "z"))),
        ];
        assert_eq!(s(split_keys(&three).unwrap()), ["g", "n"]);
        // Empty shards: an empty range at the next shard's first key; trailing ones after the
        // last key.
        let gaps = [
            shard(0, 4, Some(("a", "f"))),
            shard(1, 4, None),
            shard(2, 4, Some(("n", "z"))),
            shard(3, 4, None),
        ];
        assert_eq!(s(split_keys(&gaps).unwrap()), ["n", "n", "z\0"]);
        let overlap = [shard(0, 2, Some(("a", "m"))), shard(1, 2, Some(("m", "z")))];
        assert!(split_keys(&overlap).unwrap_err().contains("overlap"));
    }

    #[test]
    fn plans_whole_sets_only() {
        assert_eq!(plan(&[None, None]).unwrap(), None);
        let (order, sharding) = plan(&[
            Some(shard(1, 2, Some(("n", "z")))),
            Some(shard(0, 2, Some(("a", "m")))),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(order, [1, 0]);
        assert_eq!(sharding.split_key_bytes().unwrap(), [b"n".to_vec()]);
        for bad in [
            vec![Some(shard(0, 2, None)), None],
            vec![Some(shard(0, 3, None)), Some(shard(1, 3, None))],
            vec![Some(shard(0, 2, None)), Some(shard(0, 2, None))],
            vec![Some(shard(0, 2, None)), Some(shard(1, 3, None))],
        ] {
            assert!(plan(&bad).is_err(), "{bad:?}");
        }
    }
}
