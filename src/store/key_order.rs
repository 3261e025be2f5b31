//! Sorting many groups by key (the key order of `GroupKey`'s `Ord`).
//!
//! Why not `sort_by(|a, b| a.key.cmp(&b.key))`: comparing two keys follows three pointers on
//! each side (the key, its label slice, each string) into memory spread over the heap, and a
//! merged scrape sorts every group the cluster holds on every scrape, where the sort showed in
//! the scraped node's profile (docs/benchmarks.md). Here each key is first written
//! once in an order-preserving byte form, and the sort compares 64-bit prefixes of those forms,
//! taken after the bytes every key shares (`instance="i` of `instance="i17"`, ...), held side by
//! side in one array. Only keys whose prefixes are equal are compared in full.

use super::GroupKey;

/// Below this many items a plain sort is as fast.
const SMALL: usize = 64;

/// Sorts `items` by `key` (ascending key order; items with equal keys keep their order).
pub fn sort_by_group_key<T>(items: &mut Vec<T>, key: impl Fn(&T) -> &GroupKey) {
    if items.len() < SMALL {
        items.sort_by(|a, b| key(a).cmp(key(b)));
        return;
    }
    let mut forms = Vec::new();
    let mut ends = Vec::with_capacity(items.len());
    for item in items.iter() {
        order_form(key(item), &mut forms);
        ends.push(forms.len());
    }
    let form = |i: usize| &forms[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
    let shared = (1..ends.len()).fold(form(0).len(), |n, i| n.min(common_len(form(0), form(i))));
    let mut order: Vec<(u64, usize)> = (0..items.len())
        .map(|i| (prefix_after(form(i), shared), i))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| key(&items[a.1]).cmp(key(&items[b.1])))
            .then(a.1.cmp(&b.1))
    });
    let mut taken: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.iter().filter_map(|&(_, i)| taken[i].take()));
}

/// Writes `key` so that comparing two keys' forms byte by byte orders them as `GroupKey`'s
/// `Ord` does: each name and value with its 0 bytes written as `0 0xFF`, then `0 1`. A string
/// that ends (`0 1`) sorts before any continuation of it (a byte of at least 1, or `0 0xFF`),
/// and a key that ends sorts before any further label: the shorter first, as `Ord` has it.
fn order_form(key: &GroupKey, out: &mut Vec<u8>) {
    for (n, v) in key.labels() {
        for s in [n, v] {
            if s.as_bytes().contains(&0) {
                for &b in s.as_bytes() {
                    out.push(b);
                    if b == 0 {
                        out.push(0xFF);
                    }
                }
            } else {
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(&[0, 1]);
        }
    }
}

fn common_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The 8 bytes of `form` from `at`, big-endian, padded with 0 past its end. For forms sharing
/// their first `at` bytes, a form that orders first never has the larger prefix (one that ends
/// pads with 0, below every byte of a longer form at that place), so equal prefixes are the
/// only comparisons left to make in full.
fn prefix_after(form: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    let rest = form.get(at..).unwrap_or_default();
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(pairs: &[(&str, &str)]) -> GroupKey {
        GroupKey::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    #[test]
    fn sorts_as_the_key_order_does_past_a_long_shared_start() {
        let mut keys: Vec<GroupKey> = (0..500)
            .rev()
            .map(|i| key(&[("job", "j"), ("instance", &format!("i{i}"))]))
            .collect();
        let mut want = keys.clone();
        want.sort();
        sort_by_group_key(&mut keys, |k| k);
        assert_eq!(keys, want);
    }

    #[test]
    fn equal_keys_keep_their_order() {
        let mut items: Vec<(GroupKey, usize)> = (0..200)
            .map(|i| (key(&[("job", &format!("j{}", i % 7))]), i))
            .collect();
        let mut want = items.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        sort_by_group_key(&mut items, |i| &i.0);
        assert_eq!(
            items.iter().map(|i| i.1).collect::<Vec<_>>(),
            want.iter().map(|i| i.1).collect::<Vec<_>>()
        );
    }

    proptest! {
        // Names and values from a small alphabet with 0 and 1 bytes and empty strings, so that
        // prefixes collide, strings end inside a prefix, and keys differ in their label count.
        #[test]
        fn sorts_as_the_key_order_does(
            raw in proptest::collection::vec(
                proptest::collection::vec(("[a-c]{0,3}", "[\\x00\\x01a-b]{0,12}"), 1..4),
                0..300,
            ),
        ) {
            let mut keys: Vec<GroupKey> = raw
                .into_iter()
                .map(|pairs| GroupKey::new(pairs.into_iter().map(|(n, v)| (format!("n{n}"), v))))
                .collect();
            let mut want = keys.clone();
            want.sort();
            sort_by_group_key(&mut keys, |k| k);
            prop_assert_eq!(keys, want);
        }
    }
}
