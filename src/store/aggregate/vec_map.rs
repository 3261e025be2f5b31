//! A map kept as a vector sorted by key: an aggregating group holds a handful of families, each
//! a few series, each one partial per applying node, so a sorted vector is as fast as a tree to
//! search and costs one exact allocation instead of a tree node sized for eleven entries (which
//! made an aggregating group four times the size of an ordinary one).

use std::borrow::Borrow;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K, V> VecMap<K, V> {
    /// An empty map with room for exactly `n` entries (a decoded state knows its sizes: filled
    /// without growing, and without room to spare).
    pub fn with_capacity(n: usize) -> Self {
        VecMap(Vec::with_capacity(n))
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// The index of the entry `cmp` finds equal, or where it would go.
    pub fn search_by(&self, mut cmp: impl FnMut(&K) -> Ordering) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| cmp(k))
    }

    fn search<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.search_by(|k| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.search(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.search(key).ok().map(move |i| &mut self.0[i].1)
    }

    /// Inserts or replaces; the value replaced, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.insert_at(i, key, value);
                None
            }
        }
    }

    /// The entry at `index` (from [`Self::search_by`]).
    pub fn at_mut(&mut self, index: usize) -> Option<&mut V> {
        self.0.get_mut(index).map(|(_, v)| v)
    }

    pub fn at(&self, index: usize) -> Option<&V> {
        self.0.get(index).map(|(_, v)| v)
    }

    /// Puts an entry at `index`, where [`Self::search_by`] said its key goes.
    pub fn insert_at(&mut self, index: usize, key: K, value: V) {
        self.grow_for_one();
        self.0.insert(index, (key, value));
    }

    /// Room for one more entry, growing by a quarter (at least one) instead of doubling from
    /// four: most maps here hold one to a few entries for good (a series' partials, a family's
    /// series), and `Vec`'s first allocation of four entries was over half of an aggregating
    /// group's memory (benchmarks.md). A quarter still keeps inserting n entries O(n) amortised.
    fn grow_for_one(&mut self) {
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact((self.0.len() / 4).max(1));
        }
    }

    pub fn remove_at(&mut self, index: usize) {
        if index < self.0.len() {
            self.0.remove(index);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = &'a (K, V);
    type IntoIter = std::slice::Iter<'a, (K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Inserts, removals and lookups against a tree map.
        #[test]
        fn behaves_like_a_tree_map(ops in prop::collection::vec((any::<bool>(), 0u8..16, any::<u8>()), 0..64)) {
            let mut map = VecMap::default();
            let mut model = BTreeMap::new();
            for (insert, k, v) in ops {
                if insert {
                    prop_assert_eq!(map.insert(k, v), model.insert(k, v));
                } else if let Ok(i) = map.search_by(|x| x.cmp(&k)) {
                    map.remove_at(i);
                    model.remove(&k);
                }
                prop_assert_eq!(map.get(&k), model.get(&k));
                let listed: Vec<(u8, u8)> = map.iter().map(|(k, v)| (*k, *v)).collect();
                let modelled: Vec<(u8, u8)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(listed, modelled);
            }
        }
    }

    /// A map of one entry holds room for one (an aggregating group's series and partials are
    /// mostly that), and a large one at most a quarter more than it holds.
    #[test]
    fn the_allocation_stays_close_to_the_entries() {
        let mut m: VecMap<u32, u64> = VecMap::default();
        m.insert(7, 1);
        assert_eq!(m.0.capacity(), 1);
        for k in 0..1000 {
            m.insert(k, 2);
        }
        assert_eq!(m.0.len(), 1000);
        assert!(m.0.capacity() <= 1000 + 1000 / 4, "capacity {}", m.0.capacity());
    }
}
