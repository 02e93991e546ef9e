//! Relay-tree arithmetic for large unicast groups (Isis² "Building Very Large Scale Systems";
//! Dr. Multicast's "remaining groups use unicast fan-out, relay tree when large").
//!
//! A sender's group-stream data goes down a k-ary tree over the view's ranks, rotated so that
//! the sender is the root: the *relative rank* of rank `x` in sender `s`'s tree of `n` members
//! is `(x − s) mod n`, and relative rank `r` has children `k·r+1 ..= k·r+k` (those below `n`).
//! Every member is reached exactly once; the tree has `⌈log_k((k−1)·n + 1)⌉` levels.
//!
//! All functions are pure, never panic for `n ≥ 1`, `k ≥ 1`, ranks `< n`, and never overflow
//! (saturating arithmetic), so a hostile fanout from the wire cannot break them.

use std::ops::Range;

/// Relative rank of `rank` in the tree rooted at `root` over `n` members.
pub fn relative(rank: usize, root: usize, n: usize) -> usize {
    debug_assert!(rank < n && root < n);
    (rank + n - root) % n
}

/// The view rank of relative rank `rel` in the tree rooted at `root` over `n` members.
pub fn absolute(rel: usize, root: usize, n: usize) -> usize {
    debug_assert!(rel < n && root < n);
    (rel + root) % n
}

/// The relative ranks of the children of relative rank `rel` (fanout `k`, `n` members); empty
/// for a leaf.
pub fn children(rel: usize, k: usize, n: usize) -> Range<usize> {
    let first = rel.saturating_mul(k).saturating_add(1).min(n);
    let end = first.saturating_add(k).min(n);
    first..end
}

/// The relative rank of the parent of relative rank `rel` (`None` for the root).
pub fn parent(rel: usize, k: usize) -> Option<usize> {
    (rel > 0 && k > 0).then(|| (rel - 1) / k)
}

/// Levels of a tree of `n` members with fanout `k` (1 for a lone root); the longest path from
/// the sender is `levels − 1` hops.
pub fn levels(n: usize, k: usize) -> usize {
    let (mut levels, mut covered, mut width) = (0usize, 0usize, 1usize);
    while covered < n {
        levels += 1;
        covered = covered.saturating_add(width);
        width = width.saturating_mul(k.max(1));
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Walks the tree from the root and counts how often each rank is reached.
    fn reach(n: usize, k: usize, root: usize) -> Vec<u32> {
        let mut hits = vec![0u32; n];
        let mut stack = vec![0usize];
        hits[root] += 1;
        while let Some(rel) = stack.pop() {
            for c in children(rel, k, n) {
                assert_eq!(parent(c, k), Some(rel));
                hits[absolute(c, root, n)] += 1;
                stack.push(c);
            }
        }
        hits
    }

    #[test]
    fn small_trees_are_exact() {
        // 10 members, fanout 3, sender at rank 4: relative 0 → 1,2,3; 1 → 4,5,6; 2 → 7,8,9.
        assert_eq!(children(0, 3, 10), 1..4);
        assert_eq!(children(1, 3, 10), 4..7);
        assert_eq!(children(2, 3, 10), 7..10);
        assert!(children(3, 3, 10).is_empty());
        assert_eq!(absolute(1, 4, 10), 5);
        assert_eq!(relative(3, 4, 10), 9);
        assert_eq!(levels(10, 3), 3);
        assert_eq!(levels(1, 4), 1);
        assert_eq!(levels(5, 4), 2);
        assert_eq!(levels(64, 4), 4);
        assert_eq!(levels(4, 1), 4);
        assert!(children(usize::MAX / 2, usize::MAX, 7).is_empty());
    }

    #[test]
    fn every_member_exactly_once_for_all_small_shapes() {
        for n in 1..=70 {
            for k in 1..=9 {
                for root in 0..n {
                    assert!(reach(n, k, root).iter().all(|h| *h == 1), "n={n} k={k}");
                }
            }
        }
    }

    proptest! {
        /// For any group size, fanout and sender, the rotated tree reaches every member exactly
        /// once, every non-root has exactly one parent, and depth matches `levels`.
        #[test]
        fn rotated_tree_reaches_everyone_once(n in 1usize..600, k in 1usize..70, root_seed: usize) {
            let root = root_seed % n;
            let hits = reach(n, k, root);
            prop_assert!(hits.iter().all(|h| *h == 1));
            let mut deepest = 0;
            for rel in 0..n {
                let mut d = 0;
                let mut x = rel;
                while let Some(p) = parent(x, k) {
                    prop_assert!(children(p, k, n).contains(&x));
                    x = p;
                    d += 1;
                }
                deepest = deepest.max(d);
                prop_assert_eq!(relative(absolute(rel, root, n), root, n), rel);
            }
            prop_assert_eq!(deepest + 1, levels(n, k));
        }
    }
}
