//! Session-local handle tables.
//!
//! Handles are drawn from a counter that starts at a per-table random offset, so handles of
//! different sessions (and different object kinds) rarely coincide: a handle that leaks from
//! one session is not merely refused elsewhere, it is almost never even a valid number there.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use netgpu_proto::wire::ops::Handle;

/// Hashes handles with one multiply: every launch looks several up. A peer only *looks up*
/// handles (the keys are ours), so the keyed hashing that protects maps from chosen keys is
/// not needed here.
#[derive(Default)]
pub struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, x: u64) {
        // Fibonacci hashing, folded so the high bits reach the bucket index too.
        let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

pub struct HandleTable<T> {
    next: Handle,
    objects: HashMap<Handle, T, BuildHasherDefault<HandleHasher>>,
}

impl<T> HandleTable<T> {
    pub fn new() -> Self {
        HandleTable {
            next: (random_u64() >> 16).max(1),
            objects: HashMap::default(),
        }
    }

    pub fn insert(&mut self, value: T) -> Handle {
        let h = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.objects.insert(h, value);
        h
    }

    pub fn get(&self, h: Handle) -> Option<&T> {
        self.objects.get(&h)
    }

    pub fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        self.objects.get_mut(&h)
    }

    pub fn remove(&mut self, h: Handle) -> Option<T> {
        self.objects.remove(&h)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Removes and returns every object matching `pred`.
    pub fn drain_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<(Handle, T)> {
        let keys: Vec<Handle> = self
            .objects
            .iter()
            .filter(|(_, v)| pred(v))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.objects.remove(&k).map(|v| (k, v)))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Handle, &T)> {
        self.objects.iter()
    }
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A random number from the standard library's randomly keyed hasher: enough to spread
/// handle ranges, no cryptographic claim.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_nonzero_unique_and_removed_ones_are_gone() {
        let mut t = HandleTable::new();
        let a = t.insert("a");
        let b = t.insert("b");
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.get(a), None);
        assert_eq!(t.get(b), Some(&"b"));
    }

    #[test]
    fn two_tables_start_in_different_ranges() {
        let a = HandleTable::<()>::new().next;
        let b = HandleTable::<()>::new().next;
        assert_ne!(a, b);
    }
}
